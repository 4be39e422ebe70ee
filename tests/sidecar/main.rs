//! End-to-end tests of the sidecar: the real `pilotfish` binary, real sockets on 127.0.0.1:0,
//! and real clients (curl, h2load, Python grpcio and websockets).

mod admin;
mod authz;
mod grpc;
mod http;
mod identity;
mod interception;
mod lifecycle;
mod load;
mod mtls;
mod pod;
mod resilience;
mod support;
mod tcp;
mod trace;
mod transparent;
mod websocket;
