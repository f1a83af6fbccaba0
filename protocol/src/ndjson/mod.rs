//! NDJSON answers: the lines of both response formats (`lines`), the pooled buffers that whole
//! segments of lines are written into (`line_buffers`), and the way an answer reaches the
//! connection (`ChunkSender`: 64 KiB chunks through a bounded channel, so memory does not grow
//! with the number of lines; or, for small answers, one buffer), with the protocol's headers.

pub mod line_buffers;
pub mod lines;

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};

use crate::body::ResponseBody;
use crate::capabilities::{ResponseFormat, CAPABILITIES_HEADER};
use crate::error::{ErrorKind, Result, SharingError};
use crate::files::ids::FILE_ID_HASH_HEADER;
use crate::files::FileIdHash;
use line_buffers::LineBuffers;

/// Bytes gathered before a chunk is sent.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks in flight between the replay pool and the connection.
pub const CHUNKS_IN_FLIGHT_MAX: usize = 4;
pub const NDJSON_CONTENT_TYPE: &str = "application/x-ndjson; charset=utf-8";
pub const TABLE_VERSION_HEADER: &str = "delta-table-version";

/// Response chunks on their way to the connection: lines are written into a buffer that is
/// sent once it holds `CHUNK_BYTES`, or come as whole segments in pooled buffers. In memory
/// mode (small answers written on the core thread) the buffer just grows and becomes the
/// whole body.
pub(crate) struct ChunkSender {
    pub(crate) chunk: BytesMut,
    sink: Sink,
    pub(crate) line_buffers: Arc<LineBuffers>,
}

enum Sink {
    Channel(tokio::sync::mpsc::Sender<std::io::Result<Bytes>>),
    Memory,
    /// The body has ended (or the client has gone).
    Closed,
}

impl ChunkSender {
    pub(crate) fn new(
        sender: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
        head: &[u8],
        line_buffers: Arc<LineBuffers>,
    ) -> Self {
        let mut chunk = BytesMut::with_capacity(CHUNK_BYTES * 2);
        chunk.put_slice(head);
        ChunkSender {
            chunk,
            sink: Sink::Channel(sender),
            line_buffers,
        }
    }

    pub(crate) fn in_memory(head: &[u8], line_buffers: Arc<LineBuffers>) -> Self {
        ChunkSender {
            chunk: BytesMut::from(head),
            sink: Sink::Memory,
            line_buffers,
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        !matches!(self.sink, Sink::Closed)
    }

    /// Sends the buffer once it is full; false when the client has gone.
    pub(crate) fn flush_when_full(&mut self) -> bool {
        if self.chunk.len() < CHUNK_BYTES || matches!(self.sink, Sink::Memory) {
            return self.is_open();
        }
        let pending = self.chunk.split().freeze();
        self.send(pending)
    }

    /// Sends what is buffered, then `lines` (a buffer of `line_buffers`) as they are; false
    /// when the client has gone.
    pub(crate) fn send_segment(&mut self, lines: BytesMut) -> bool {
        if let Sink::Memory = self.sink {
            self.chunk.put_slice(&lines);
            self.line_buffers.give_back(lines);
            return true;
        }
        if !self.chunk.is_empty() {
            let pending = self.chunk.split().freeze();
            if !self.send(pending) {
                return false;
            }
        }
        let segment = self.line_buffers.chunk(lines);
        self.send(segment)
    }

    pub(crate) fn send(&mut self, chunk: Bytes) -> bool {
        match &self.sink {
            Sink::Closed => false,
            Sink::Memory => {
                self.chunk.put_slice(&chunk);
                true
            }
            Sink::Channel(sender) => {
                if sender.blocking_send(Ok(chunk)).is_err() {
                    self.sink = Sink::Closed;
                    return false;
                }
                true
            }
        }
    }

    /// Sends what is buffered and ends the body (in memory mode the buffer is the body).
    pub(crate) fn finish(&mut self) {
        if let Sink::Channel(sender) = std::mem::replace(&mut self.sink, Sink::Closed) {
            if !self.chunk.is_empty() {
                let _ = sender.blocking_send(Ok(self.chunk.split().freeze()));
            }
        }
    }

    /// Ends the body with an `endStreamAction` carrying the error (for clients that announced
    /// `includeendstreamaction`): the lines already sent stay, the client learns why the
    /// answer stops. Internal errors are named only by their status.
    pub(crate) fn end_with_error(&mut self, error: &SharingError) {
        let message = match error.kind {
            ErrorKind::Internal => "internal error".to_string(),
            _ => error.message.clone(),
        };
        let line = serde_json::json!({"endStreamAction": {
            "errorMessage": message,
            "httpStatusErrorCode": error.kind.status().as_u16(),
        }});
        let _ = serde_json::to_writer((&mut self.chunk).writer(), &line);
        self.chunk.put_u8(b'\n');
        self.finish();
    }

    /// Ends the body with an error (the connection is reset mid-stream).
    pub(crate) fn fail(&mut self, message: String) {
        if let Sink::Channel(sender) = std::mem::replace(&mut self.sink, Sink::Closed) {
            let _ = sender.blocking_send(Err(std::io::Error::other(message)));
        }
    }
}

/// An answer body that `write` produces on the replay pool into a `ChunkSender` starting
/// with `head`. An error after the first byte ends the body with an `endStreamAction` naming
/// it when the client announced `includeendstreamaction` (`errors_in_words`); otherwise the
/// stream is cut, so the client never takes a short body for a whole one.
pub(crate) fn blocking_body(
    head: Vec<u8>,
    line_buffers: Arc<LineBuffers>,
    errors_in_words: bool,
    what: &'static str,
    write: impl FnOnce(&mut ChunkSender) -> Result<()> + Send + 'static,
) -> ResponseBody {
    let (sender, mut receiver) =
        tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(CHUNKS_IN_FLIGHT_MAX);
    tokio::task::spawn_blocking(move || {
        let mut out = ChunkSender::new(sender, &head, line_buffers);
        if let Err(error) = write(&mut out) {
            tracing::warn!(%error, "{what} stream failed");
            if errors_in_words {
                out.end_with_error(&error);
            } else {
                out.fail(error.to_string());
            }
        }
    });
    let stream = futures::stream::poll_fn(move |context| receiver.poll_recv(context));
    StreamBody::new(futures::StreamExt::map(stream, |chunk| {
        chunk.map(http_body::Frame::data)
    }))
    .boxed()
}

/// An NDJSON response with the protocol's headers.
pub fn ndjson_response(
    body: ResponseBody,
    version: u64,
    format: ResponseFormat,
    end_stream_action: bool,
) -> Response<ResponseBody> {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    set_header(
        &mut response,
        header::CONTENT_TYPE.as_str(),
        NDJSON_CONTENT_TYPE,
    );
    set_header(&mut response, TABLE_VERSION_HEADER, &version.to_string());
    let mut capabilities = format!("responseformat={}", format.name());
    if end_stream_action {
        capabilities.push_str(";includeendstreamaction=true");
    }
    set_header(&mut response, CAPABILITIES_HEADER, &capabilities);
    response
}

/// Echoes the `fileidhash` a request asked for, as the reference server does.
pub(crate) fn echo_file_id_hash(response: &mut Response<ResponseBody>, asked: Option<FileIdHash>) {
    if let Some(hash) = asked {
        set_header(response, FILE_ID_HASH_HEADER, hash.header_value());
    }
}

pub(crate) fn set_header(response: &mut Response<ResponseBody>, name: &str, value: &str) {
    if let (Ok(name), Ok(value)) = (
        http::header::HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(value),
    ) {
        response.headers_mut().insert(name, value);
    }
}
