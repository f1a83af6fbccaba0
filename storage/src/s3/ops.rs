//! `impl S3 for LakeshareS3`: each S3 operation mapped onto `Node`.
//!
//! Invariants: every ETag leaves quoted (s3s quotes `ETag` values); every storage error goes
//! through `error::to_s3_error`; a body whose declared checksum fails never reaches a
//! committed object (see `checksum`).

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::StreamExt as _;
use http::StatusCode;
use s3s::dto::*;
use s3s::{s3_error, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, S3};

use crate::error::StorageError;
use crate::node::{CompletePart, ListRequest, ListResult, ObjectInfo, PutOptions, WriteCondition};
use crate::s3::checksum::{verified_body, BodyExpectations, BodyFailure, BodyOutcome};
use crate::s3::checksum::{ChecksumAlgorithm, PUT_BYTES_MAX};
use crate::s3::conditions::{
    content_range, invalid_range, resolve_range, Decision, ReadConditions,
};
use crate::s3::error::{to_s3_error, wire_error};
use crate::s3::list::url_encode;
use crate::s3::list::{after_bound, decode_continuation, encode_continuation, max_keys};
use crate::s3::LakeshareS3;

/// The owner every bucket and object reports (single-tenant node).
const OWNER_ID: &str = "02d6176db174dc93cb1b899f7c6078f08654445fe8cf1b6ce98d8855f66bdbf4";
const OWNER_NAME: &str = "lakeshare";
/// Largest part number (S3's).
const PART_NUMBER_MAX: i32 = 10_000;
/// Deletes run this many at a time within one DeleteObjects call.
const DELETE_CONCURRENCY_MAX: usize = 16;
/// Attempts at reading a ranged object whose metadata changes between HEAD and GET.
const RANGED_READ_ATTEMPTS_MAX: usize = 3;

#[async_trait::async_trait]
impl S3 for LakeshareS3 {
    async fn list_buckets(
        &self,
        _req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let buckets = self.node.list_buckets().await.map_err(to_s3_error)?;
        let buckets = buckets
            .into_iter()
            .map(|b| Bucket {
                name: Some(b.name),
                creation_date: Some(Timestamp::from(b.created)),
                bucket_region: None,
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(owner()),
            ..Default::default()
        }))
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let bucket = req.input.bucket;
        self.node.make_bucket(&bucket).await.map_err(to_s3_error)?;
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{bucket}")),
        }))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.node
            .bucket_info(&req.input.bucket)
            .await
            .map_err(to_s3_error)?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.node
            .delete_bucket(&req.input.bucket)
            .await
            .map_err(to_s3_error)?;
        Ok(S3Response::new(DeleteBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.node
            .bucket_info(&req.input.bucket)
            .await
            .map_err(to_s3_error)?;
        Ok(S3Response::new(GetBucketLocationOutput {
            location_constraint: None,
        }))
    }

    // ---- probes: the answers of an unversioned bucket without tags, lifecycle, policy or
    // encryption settings, as MinIO gives them (tools ask before they write).

    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        self.bucket_exists(&req.input.bucket).await?;
        Ok(S3Response::new(GetBucketVersioningOutput::default()))
    }

    async fn get_bucket_tagging(
        &self,
        req: S3Request<GetBucketTaggingInput>,
    ) -> S3Result<S3Response<GetBucketTaggingOutput>> {
        self.bucket_exists(&req.input.bucket).await?;
        Err(s3_error!(NoSuchTagSet, "The TagSet does not exist"))
    }

    async fn get_bucket_lifecycle_configuration(
        &self,
        req: S3Request<GetBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<GetBucketLifecycleConfigurationOutput>> {
        self.bucket_exists(&req.input.bucket).await?;
        Err(s3_error!(
            NoSuchLifecycleConfiguration,
            "The lifecycle configuration does not exist"
        ))
    }

    async fn get_bucket_policy(
        &self,
        req: S3Request<GetBucketPolicyInput>,
    ) -> S3Result<S3Response<GetBucketPolicyOutput>> {
        self.bucket_exists(&req.input.bucket).await?;
        Err(s3_error!(
            NoSuchBucketPolicy,
            "The bucket policy does not exist"
        ))
    }

    async fn get_bucket_encryption(
        &self,
        req: S3Request<GetBucketEncryptionInput>,
    ) -> S3Result<S3Response<GetBucketEncryptionOutput>> {
        self.bucket_exists(&req.input.bucket).await?;
        let mut error = s3_error!(
            ServerSideEncryptionConfigurationNotFoundError,
            "The server side encryption configuration was not found"
        );
        // S3 and MinIO answer 404; s3s's default for this code is 400.
        error.set_status_code(StatusCode::NOT_FOUND);
        Err(error)
    }

    async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        let input = req.input;
        self.node
            .head_object(&input.bucket, &input.key)
            .await
            .map_err(to_s3_error)?;
        Ok(S3Response::new(GetObjectTaggingOutput {
            tag_set: Vec::new(),
            version_id: None,
        }))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let expectations = BodyExpectations::from_headers(&req.headers).map_err(body_error)?;
        let input = req.input;
        check_content_length(input.content_length)?;
        let options = PutOptions {
            content_type: input.content_type,
            user_metadata: to_btree(input.metadata),
            checksums: header_checksums(&expectations),
            condition: write_condition(input.if_match, input.if_none_match)?,
        };
        let (body, outcome) = verified_body(
            body_or_empty(input.body),
            expectations,
            req.trailing_headers,
        );
        let result = self
            .node
            .put_object(&input.bucket, &input.key, body, options)
            .await;
        let info = result.map_err(|e| body_or_storage_error(&outcome, e))?;
        let checksums = outcome.verified().unwrap_or_else(|| info.checksums.clone());
        let fields = ChecksumFields::from_map(&checksums);
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(etag(&info.etag)),
            checksum_crc32: fields.crc32,
            checksum_crc32c: fields.crc32c,
            checksum_crc64nvme: fields.crc64nvme,
            checksum_sha1: fields.sha1,
            checksum_sha256: fields.sha256,
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        let conditions = ReadConditions::of_get(&input);
        let (bucket, key) = (input.bucket.as_str(), input.key.as_str());
        let (result, served) = match &input.range {
            None => {
                let result = self
                    .node
                    .get_object(bucket, key, None)
                    .await
                    .map_err(to_s3_error)?;
                check_read_conditions(&conditions, &result.info)?;
                (result, None)
            }
            // The hot path of shared tables (parquet footers and column chunks): the node
            // resolves the range against the size it reads, in one metadata read.
            Some(Range::Int { first, last }) => {
                let result = self
                    .node
                    .get_object(bucket, key, Some((*first, *last)))
                    .await
                    .map_err(|e| match e {
                        StorageError::InvalidArgument(_) => invalid_range(),
                        other => to_s3_error(other),
                    })?;
                check_read_conditions(&conditions, &result.info)?;
                let served = result.range.ok_or_else(invalid_range)?;
                (result, Some(served))
            }
            Some(range) => self.get_ranged(bucket, key, range, &conditions).await?,
        };
        let info = &result.info;
        let checksums_wanted = served.is_none() && checksum_mode_enabled(&input.checksum_mode);
        let fields = if checksums_wanted {
            ChecksumFields::from_map(&info.checksums)
        } else {
            ChecksumFields::default()
        };
        let content_length = served.map_or(info.size, |r| r.last - r.first + 1);
        let output = GetObjectOutput {
            body: Some(StreamingBlob::wrap(result.body)),
            accept_ranges: Some("bytes".to_owned()),
            content_length: Some(content_length as i64),
            content_range: served.map(|r| content_range(r, info.size)),
            content_type: info.content_type.clone(),
            e_tag: Some(etag(&info.etag)),
            last_modified: Some(Timestamp::from(info.modified)),
            metadata: to_map(&info.user_metadata),
            checksum_crc32: fields.crc32,
            checksum_crc32c: fields.crc32c,
            checksum_crc64nvme: fields.crc64nvme,
            checksum_sha1: fields.sha1,
            checksum_sha256: fields.sha256,
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        let info = self
            .node
            .head_object(&input.bucket, &input.key)
            .await
            .map_err(to_s3_error)?;
        ReadConditions::of_head(&input).check(&info.etag, info.modified)?;
        let fields = if checksum_mode_enabled(&input.checksum_mode) {
            ChecksumFields::from_map(&info.checksums)
        } else {
            ChecksumFields::default()
        };
        Ok(S3Response::new(HeadObjectOutput {
            accept_ranges: Some("bytes".to_owned()),
            content_length: Some(info.size as i64),
            content_type: info.content_type.clone(),
            e_tag: Some(etag(&info.etag)),
            last_modified: Some(Timestamp::from(info.modified)),
            metadata: to_map(&info.user_metadata),
            checksum_crc32: fields.crc32,
            checksum_crc32c: fields.crc32c,
            checksum_crc64nvme: fields.crc64nvme,
            checksum_sha1: fields.sha1,
            checksum_sha256: fields.sha256,
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let input = req.input;
        self.node
            .delete_object(&input.bucket, &input.key)
            .await
            .map_err(to_s3_error)?;
        Ok(S3Response::with_status(
            DeleteObjectOutput::default(),
            StatusCode::NO_CONTENT,
        ))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let input = req.input;
        let quiet = input.delete.quiet.unwrap_or(false);
        let bucket = input.bucket;
        self.node.bucket_info(&bucket).await.map_err(to_s3_error)?;
        let outcomes: Vec<(String, Result<(), S3Error>)> =
            futures::stream::iter(input.delete.objects)
                .map(|object| {
                    let bucket = bucket.as_str();
                    async move {
                        let result = self.node.delete_object(bucket, &object.key).await;
                        (object.key, result.map_err(to_s3_error))
                    }
                })
                .buffered(DELETE_CONCURRENCY_MAX)
                .collect()
                .await;
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for (key, result) in outcomes {
            match result {
                Ok(()) if quiet => {}
                Ok(()) => deleted.push(DeletedObject {
                    key: Some(key),
                    ..Default::default()
                }),
                Err(error) => errors.push(Error {
                    code: Some(error.code().as_str().to_owned()),
                    message: error.message().map(str::to_owned),
                    key: Some(key),
                    version_id: None,
                }),
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: Some(errors),
            request_charged: None,
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let input = req.input;
        let (source_bucket, source_key) = copy_source(&input.copy_source)?;
        let source = self
            .node
            .head_object(source_bucket, source_key)
            .await
            .map_err(to_s3_error)?;
        let conditions = ReadConditions {
            if_match: input.copy_source_if_match,
            if_none_match: input.copy_source_if_none_match,
            if_modified_since: input.copy_source_if_modified_since,
            if_unmodified_since: input.copy_source_if_unmodified_since,
        };
        // A copy has no 304: every failed source condition is 412.
        if conditions.decide(&source.etag, source.modified) != Decision::Proceed {
            return Err(to_s3_error(StorageError::PreconditionFailed));
        }
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str().eq_ignore_ascii_case(MetadataDirective::REPLACE));
        if !replace && source_bucket == input.bucket && source_key == input.key {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself \
                 without changing the object's metadata."
            ));
        }
        let options = if replace {
            PutOptions {
                content_type: input.content_type,
                user_metadata: to_btree(input.metadata),
                ..Default::default()
            }
        } else {
            PutOptions {
                content_type: source.content_type.clone(),
                user_metadata: source.user_metadata.clone(),
                checksums: source.checksums.clone(),
                ..Default::default()
            }
        };
        let info = self
            .node
            .copy_object(
                source_bucket,
                source_key,
                &input.bucket,
                &input.key,
                options,
            )
            .await
            .map_err(to_s3_error)?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(etag(&info.etag)),
                last_modified: Some(Timestamp::from(info.modified)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let max = max_keys(input.max_keys).map_err(to_s3_error)?;
        let delimiter = input.delimiter.clone().filter(|d| !d.is_empty());
        let after = match &input.continuation_token {
            Some(token) => {
                let last = decode_continuation(token).map_err(to_s3_error)?;
                Some(after_bound(&last, delimiter.as_deref()))
            }
            None => input.start_after.clone().filter(|s| !s.is_empty()),
        };
        let url = wants_url_encoding(&input.encoding_type);
        let request = ListRequest {
            prefix: input.prefix.clone().unwrap_or_default(),
            delimiter: delimiter.clone(),
            after,
            max_keys: max,
        };
        let result = self.list(&input.bucket, request).await?;
        let next_continuation_token = match (&result.next_after, result.is_truncated) {
            (Some(last), true) => Some(encode_continuation(last)),
            _ => None,
        };
        let key_count = (result.objects.len() + result.common_prefixes.len()) as i32;
        let fetch_owner = input.fetch_owner.unwrap_or(false);
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(encode_if(url, &input.prefix.unwrap_or_default())),
            delimiter: delimiter.map(|d| encode_if(url, &d)),
            max_keys: Some(max as i32),
            key_count: Some(key_count),
            continuation_token: input.continuation_token,
            start_after: input.start_after.map(|s| encode_if(url, &s)),
            is_truncated: Some(result.is_truncated),
            next_continuation_token,
            contents: Some(list_contents(&result, url, fetch_owner)),
            common_prefixes: Some(list_prefixes(&result, url)),
            encoding_type: input.encoding_type,
            request_charged: None,
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        let max = max_keys(input.max_keys).map_err(to_s3_error)?;
        let delimiter = input.delimiter.clone().filter(|d| !d.is_empty());
        let marker = input.marker.clone().filter(|m| !m.is_empty());
        let url = wants_url_encoding(&input.encoding_type);
        let request = ListRequest {
            prefix: input.prefix.clone().unwrap_or_default(),
            delimiter: delimiter.clone(),
            after: marker
                .as_deref()
                .map(|m| after_bound(m, delimiter.as_deref())),
            max_keys: max,
        };
        let result = self.list(&input.bucket, request).await?;
        let next_marker = match (&result.next_after, result.is_truncated, &delimiter) {
            (Some(last), true, Some(_)) => Some(encode_if(url, last)),
            _ => None,
        };
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(encode_if(url, &input.prefix.unwrap_or_default())),
            marker: Some(encode_if(url, &marker.unwrap_or_default())),
            delimiter: delimiter.map(|d| encode_if(url, &d)),
            max_keys: Some(max as i32),
            is_truncated: Some(result.is_truncated),
            next_marker,
            contents: Some(list_contents(&result, url, true)),
            common_prefixes: Some(list_prefixes(&result, url)),
            encoding_type: input.encoding_type,
            request_charged: None,
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        let options = PutOptions {
            content_type: input.content_type,
            user_metadata: to_btree(input.metadata),
            ..Default::default()
        };
        let upload_id = self
            .node
            .create_multipart(&input.bucket, &input.key, options)
            .await
            .map_err(to_s3_error)?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload_id),
            checksum_algorithm: input.checksum_algorithm,
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let expectations = BodyExpectations::from_headers(&req.headers).map_err(body_error)?;
        let input = req.input;
        let part_number = part_number(input.part_number)?;
        check_content_length(input.content_length)?;
        let checksums = header_checksums(&expectations);
        let (body, outcome) = verified_body(
            body_or_empty(input.body),
            expectations,
            req.trailing_headers,
        );
        let result = self
            .node
            .upload_part(
                &input.bucket,
                &input.key,
                &input.upload_id,
                part_number,
                body,
                checksums,
            )
            .await;
        let part = result.map_err(|e| body_or_storage_error(&outcome, e))?;
        let checksums = outcome.verified().unwrap_or_else(|| part.checksums.clone());
        let fields = ChecksumFields::from_map(&checksums);
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(etag(&part.etag)),
            checksum_crc32: fields.crc32,
            checksum_crc32c: fields.crc32c,
            checksum_crc64nvme: fields.crc64nvme,
            checksum_sha1: fields.sha1,
            checksum_sha256: fields.sha256,
            ..Default::default()
        }))
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let input = req.input;
        let part_number = part_number(input.part_number)?;
        let (source_bucket, source_key) = copy_source(&input.copy_source)?;
        let source = self
            .node
            .head_object(source_bucket, source_key)
            .await
            .map_err(to_s3_error)?;
        let conditions = ReadConditions {
            if_match: input.copy_source_if_match,
            if_none_match: input.copy_source_if_none_match,
            if_modified_since: input.copy_source_if_modified_since,
            if_unmodified_since: input.copy_source_if_unmodified_since,
        };
        if conditions.decide(&source.etag, source.modified) != Decision::Proceed {
            return Err(to_s3_error(StorageError::PreconditionFailed));
        }
        let range = match &input.copy_source_range {
            None => None,
            Some(text) => {
                let range = Range::parse(text)
                    .map_err(|_| s3_error!(InvalidArgument, "invalid x-amz-copy-source-range"))?;
                let resolved = resolve_range(&range, source.size).ok_or_else(invalid_range)?;
                Some((resolved.first, Some(resolved.last)))
            }
        };
        let got = self
            .node
            .get_object(source_bucket, source_key, range)
            .await
            .map_err(to_s3_error)?;
        if got.info.etag != source.etag {
            return Err(to_s3_error(StorageError::PreconditionFailed));
        }
        let part = self
            .node
            .upload_part(
                &input.bucket,
                &input.key,
                &input.upload_id,
                part_number,
                got.body,
                BTreeMap::new(),
            )
            .await
            .map_err(to_s3_error)?;
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(etag(&part.etag)),
                last_modified: Some(Timestamp::from(part.modified)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        let parts = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default();
        if parts.is_empty() {
            return Err(s3_error!(
                MalformedXML,
                "You must specify at least one part in CompleteMultipartUpload"
            ));
        }
        let mut complete_parts = Vec::with_capacity(parts.len());
        for part in parts {
            let number = part
                .part_number
                .ok_or_else(|| s3_error!(MalformedXML, "part number"))?;
            let tag = part
                .e_tag
                .ok_or_else(|| s3_error!(MalformedXML, "part ETag"))?;
            complete_parts.push(CompletePart {
                part_number: part_number(number)?,
                etag: tag.value().trim_matches('"').to_owned(),
            });
        }
        let condition = write_condition(input.if_match, input.if_none_match)?;
        let info = self
            .node
            .complete_multipart(
                &input.bucket,
                &input.key,
                &input.upload_id,
                complete_parts,
                condition,
            )
            .await
            .map_err(to_s3_error)?;
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            location: Some(format!("/{}/{}", input.bucket, input.key)),
            bucket: Some(input.bucket),
            key: Some(input.key),
            e_tag: Some(etag(&info.etag)),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        self.node
            .abort_multipart(&input.bucket, &input.key, &input.upload_id)
            .await
            .map_err(to_s3_error)?;
        Ok(S3Response::with_status(
            AbortMultipartUploadOutput::default(),
            StatusCode::NO_CONTENT,
        ))
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let input = req.input;
        let parts = self
            .node
            .list_parts(&input.bucket, &input.key, &input.upload_id)
            .await
            .map_err(to_s3_error)?;
        let marker = input.part_number_marker.unwrap_or(0).max(0) as u32;
        let max = max_keys(input.max_parts).map_err(to_s3_error)?;
        let mut remaining = parts
            .into_iter()
            .filter(|p| p.part_number > marker)
            .peekable();
        let page: Vec<_> = remaining.by_ref().take(max).collect();
        let is_truncated = remaining.peek().is_some();
        let next_marker = page.last().map(|p| p.part_number as i32);
        let parts = page
            .into_iter()
            .map(|p| {
                let fields = ChecksumFields::from_map(&p.checksums);
                Part {
                    part_number: Some(p.part_number as i32),
                    e_tag: Some(etag(&p.etag)),
                    size: Some(p.size as i64),
                    last_modified: Some(Timestamp::from(p.modified)),
                    checksum_crc32: fields.crc32,
                    checksum_crc32c: fields.crc32c,
                    checksum_crc64nvme: fields.crc64nvme,
                    checksum_sha1: fields.sha1,
                    checksum_sha256: fields.sha256,
                }
            })
            .collect();
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: next_marker,
            max_parts: Some(max as i32),
            is_truncated: Some(is_truncated),
            parts: Some(parts),
            owner: Some(owner()),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let mut uploads = self
            .node
            .list_multipart_uploads(&input.bucket, &prefix)
            .await
            .map_err(to_s3_error)?;
        uploads.sort_by(|a, b| (&a.key, &a.upload_id).cmp(&(&b.key, &b.upload_id)));
        let key_marker = input.key_marker.clone().unwrap_or_default();
        let upload_marker = input.upload_id_marker.clone().unwrap_or_default();
        let max = max_keys(input.max_uploads).map_err(to_s3_error)?;
        let mut remaining = uploads
            .into_iter()
            .filter(|u| {
                key_marker.is_empty()
                    || u.key > key_marker
                    || (u.key == key_marker
                        && !upload_marker.is_empty()
                        && u.upload_id > upload_marker)
            })
            .peekable();
        let page: Vec<_> = remaining.by_ref().take(max).collect();
        let is_truncated = remaining.peek().is_some();
        let (next_key_marker, next_upload_id_marker) = match page.last() {
            Some(last) if is_truncated => (Some(last.key.clone()), Some(last.upload_id.clone())),
            _ => (None, None),
        };
        let uploads = page
            .into_iter()
            .map(|u| MultipartUpload {
                key: Some(u.key),
                upload_id: Some(u.upload_id),
                initiated: Some(Timestamp::from(u.initiated)),
                owner: Some(owner()),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            key_marker: input.key_marker,
            upload_id_marker: input.upload_id_marker,
            next_key_marker,
            next_upload_id_marker,
            max_uploads: Some(max as i32),
            is_truncated: Some(is_truncated),
            uploads: Some(uploads),
            ..Default::default()
        }))
    }
}

impl LakeshareS3 {
    /// A suffix-ranged read: the range is resolved against the object's size before
    /// reading, and the read is retried if the object changed in between.
    async fn get_ranged(
        &self,
        bucket: &str,
        key: &str,
        range: &Range,
        conditions: &ReadConditions,
    ) -> S3Result<(crate::node::GetResult, Option<crate::node::ByteRange>)> {
        for _ in 0..RANGED_READ_ATTEMPTS_MAX {
            let info = self
                .node
                .head_object(bucket, key)
                .await
                .map_err(to_s3_error)?;
            check_read_conditions(conditions, &info)?;
            let resolved = resolve_range(range, info.size).ok_or_else(invalid_range)?;
            let result = self
                .node
                .get_object(bucket, key, Some((resolved.first, Some(resolved.last))))
                .await
                .map_err(to_s3_error)?;
            if result.info.etag == info.etag {
                return Ok((result, Some(resolved)));
            }
        }
        Err(wire_error(
            S3ErrorCode::SlowDown,
            503,
            "The object kept changing while being read; please retry.",
        ))
    }

    async fn bucket_exists(&self, bucket: &str) -> S3Result<()> {
        self.node
            .bucket_info(bucket)
            .await
            .map(|_| ())
            .map_err(to_s3_error)
    }

    async fn list(&self, bucket: &str, request: ListRequest) -> S3Result<ListResult> {
        if request.max_keys == 0 {
            self.bucket_exists(bucket).await?;
            return Ok(ListResult::default());
        }
        self.node
            .list_objects(bucket, request)
            .await
            .map_err(to_s3_error)
    }
}

/// The five optional checksum fields of S3 outputs.
#[derive(Default)]
struct ChecksumFields {
    crc32: Option<String>,
    crc32c: Option<String>,
    crc64nvme: Option<String>,
    sha1: Option<String>,
    sha256: Option<String>,
}

impl ChecksumFields {
    fn from_map(map: &BTreeMap<String, String>) -> ChecksumFields {
        let get = |a: ChecksumAlgorithm| map.get(a.name()).cloned();
        ChecksumFields {
            crc32: get(ChecksumAlgorithm::Crc32),
            crc32c: get(ChecksumAlgorithm::Crc32c),
            crc64nvme: get(ChecksumAlgorithm::Crc64Nvme),
            sha1: get(ChecksumAlgorithm::Sha1),
            sha256: get(ChecksumAlgorithm::Sha256),
        }
    }
}

fn etag(unquoted: &str) -> ETag {
    ETag::Strong(unquoted.trim_matches('"').to_owned())
}

fn owner() -> Owner {
    Owner {
        id: Some(OWNER_ID.to_owned()),
        display_name: Some(OWNER_NAME.to_owned()),
    }
}

fn check_read_conditions(conditions: &ReadConditions, info: &ObjectInfo) -> S3Result<()> {
    conditions.check(&info.etag, info.modified)
}

fn checksum_mode_enabled(mode: &Option<ChecksumMode>) -> bool {
    mode.as_ref()
        .is_some_and(|m| m.as_str().eq_ignore_ascii_case(ChecksumMode::ENABLED))
}

fn wants_url_encoding(encoding: &Option<EncodingType>) -> bool {
    encoding
        .as_ref()
        .is_some_and(|e| e.as_str().eq_ignore_ascii_case(EncodingType::URL))
}

fn encode_if(url: bool, value: &str) -> String {
    if url {
        url_encode(value)
    } else {
        value.to_owned()
    }
}

fn list_contents(result: &ListResult, url: bool, with_owner: bool) -> Vec<Object> {
    result
        .objects
        .iter()
        .map(|o| Object {
            key: Some(encode_if(url, &o.key)),
            e_tag: Some(etag(&o.etag)),
            size: Some(o.size as i64),
            last_modified: Some(Timestamp::from(o.modified)),
            storage_class: Some(ObjectStorageClass::from_static(
                ObjectStorageClass::STANDARD,
            )),
            owner: with_owner.then(owner),
            ..Default::default()
        })
        .collect()
}

fn list_prefixes(result: &ListResult, url: bool) -> Vec<CommonPrefix> {
    result
        .common_prefixes
        .iter()
        .map(|p| CommonPrefix {
            prefix: Some(encode_if(url, p)),
        })
        .collect()
}

fn copy_source(source: &CopySource) -> S3Result<(&str, &str)> {
    match source {
        CopySource::Bucket { bucket, key, .. } => Ok((bucket, key)),
        _ => Err(s3_error!(
            NotImplemented,
            "Only bucket/key copy sources are supported"
        )),
    }
}

fn part_number(number: i32) -> S3Result<u32> {
    if (1..=PART_NUMBER_MAX).contains(&number) {
        return Ok(number as u32);
    }
    Err(s3_error!(
        InvalidArgument,
        "Part number must be an integer between 1 and 10000"
    ))
}

fn check_content_length(length: Option<i64>) -> S3Result<()> {
    match length {
        Some(length) if length as u64 > PUT_BYTES_MAX => Err(s3_error!(
            EntityTooLarge,
            "Your proposed upload exceeds the maximum allowed object size."
        )),
        _ => Ok(()),
    }
}

fn write_condition(
    if_match: Option<ETagCondition>,
    if_none_match: Option<ETagCondition>,
) -> S3Result<WriteCondition> {
    let if_none_match_any = match if_none_match {
        None => false,
        Some(ETagCondition::Any) => true,
        Some(ETagCondition::ETag(_)) => {
            return Err(s3_error!(
                NotImplemented,
                "If-None-Match on writes accepts only *"
            ));
        }
    };
    let if_match = if_match.map(|condition| match condition {
        ETagCondition::Any => "*".to_owned(),
        ETagCondition::ETag(tag) => tag.value().trim_matches('"').to_owned(),
    });
    Ok(WriteCondition {
        if_none_match_any,
        if_match,
    })
}

fn header_checksums(expectations: &BodyExpectations) -> BTreeMap<String, String> {
    expectations
        .checksums
        .iter()
        .map(|(algorithm, value)| (algorithm.name().to_owned(), value.clone()))
        .collect()
}

fn to_btree(metadata: Option<Metadata>) -> BTreeMap<String, String> {
    metadata
        .map(|m| m.into_iter().collect())
        .unwrap_or_default()
}

fn to_map(metadata: &BTreeMap<String, String>) -> Option<Metadata> {
    if metadata.is_empty() {
        return None;
    }
    Some(
        metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

fn body_or_empty(body: Option<StreamingBlob>) -> StreamingBlob {
    body.unwrap_or_else(|| {
        StreamingBlob::wrap(futures::stream::empty::<Result<Bytes, std::io::Error>>())
    })
}

/// When the node failed because our body check cut the stream, the check's reason is the
/// answer; otherwise the node's error is.
fn body_or_storage_error(outcome: &BodyOutcome, error: StorageError) -> S3Error {
    match outcome.failure() {
        Some(failure) => body_error(failure),
        None => to_s3_error(error),
    }
}

fn body_error(failure: BodyFailure) -> S3Error {
    match failure {
        BodyFailure::BadDigest(message) => wire_error(S3ErrorCode::BadDigest, 400, message),
        BodyFailure::InvalidDigest(_) => wire_error(
            S3ErrorCode::InvalidDigest,
            400,
            "The Content-MD5 you specified is not valid.",
        ),
        BodyFailure::InvalidRequest(message) => {
            wire_error(S3ErrorCode::InvalidRequest, 400, message)
        }
        BodyFailure::TooLarge => wire_error(
            S3ErrorCode::EntityTooLarge,
            400,
            "Your proposed upload exceeds the maximum allowed object size.",
        ),
        BodyFailure::Stream(message) if message.contains("Signature") => {
            wire_error(S3ErrorCode::SignatureDoesNotMatch, 403, message)
        }
        BodyFailure::Stream(message) => wire_error(S3ErrorCode::IncompleteBody, 400, message),
    }
}
