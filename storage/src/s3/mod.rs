//! The S3 API: `s3s` does the wire (SigV4/SigV2, aws-chunked, XML); this module maps each
//! operation onto `Node`.
