//! The L7 path: serving HTTP/1.1 and HTTP/2 connections and proxying their requests.

pub mod body;
pub mod correlation;
pub mod errors;
pub mod headers;
pub mod pool;
pub mod proxy;
pub mod request_body;
pub mod server;
