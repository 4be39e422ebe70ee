//! Sockets: binding listeners, connecting to endpoints with a timeout, and reading the original
//! destination of a connection redirected by iptables (`SO_ORIGINAL_DST`).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, SockRef, Socket, TcpKeepalive, Type};
use tokio::net::{TcpListener, TcpStream};

/// Binds a listener with `SO_REUSEADDR` (restarts do not wait out TIME_WAIT) and a deep backlog,
/// which is where connections wait while the per-listener connection limit is reached.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Connects with a deadline; the error says which address and why.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(io::Error::new(e.kind(), format!("connect to {addr}: {e}"))),
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect to {addr}: timed out after {timeout:?}"),
            ))
        }
    };
    stream.set_nodelay(true)?;
    // Notice endpoints that vanish without a FIN (host down, network partition).
    let keepalive = TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10))
        .with_retries(3);
    SockRef::from(&stream).set_tcp_keepalive(&keepalive)?;
    Ok(stream)
}

/// The destination the client dialled before an iptables REDIRECT sent it here, if it was
/// redirected: `None` when the connection was made to the listener directly.
pub fn original_dst(stream: &TcpStream) -> Option<SocketAddr> {
    let local = stream.local_addr().ok()?;
    let sock = SockRef::from(stream);
    let orig = if local.is_ipv4() { sock.original_dst_v4() } else { sock.original_dst_v6() };
    let orig = orig.ok()?.as_socket()?;
    (orig != local).then_some(orig)
}
