//! The response body type of every sharing and admin route: either a whole buffer or a
//! stream of chunks, boxed so one router can return both.

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};

pub type ResponseBody = BoxBody<Bytes, std::io::Error>;

pub fn full_body(bytes: impl Into<Bytes>) -> ResponseBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty_body() -> ResponseBody {
    full_body(Bytes::new())
}
