//! Where the listening sockets come from: handed over by the service manager (systemd socket
//! activation: `LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`), or bound here.
//!
//! A socket handed over is matched to a listener by its name (`FileDescriptorName=` in the
//! `.socket` unit: `proxy`, `admin`, `forward_auth`, `grpc`) or else by the address it is
//! bound to. The manager keeps the socket open across restarts of warden, so connections
//! that arrive while one process stops and the next starts wait in its queue: none is
//! refused. A socket bound here may carry `SO_REUSEPORT` (`[gateway] reuse_port`), so a new
//! process can listen beside the old one while the old one drains; the connections queued
//! at the old socket when it closes are reset unless the kernel migrates them
//! (`net.ipv4.tcp_migrate_req = 1`), which warden says at start when it does not.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;

use super::StartError;

/// The names that pick a listener (`FileDescriptorName=`).
const ROLES: [&str; 4] = ["proxy", "admin", "forward_auth", "grpc"];

/// The pending-connection queue of a socket bound here.
const BACKLOG: i32 = 1024;

/// The sockets the service manager handed over, not yet taken by a listener.
#[derive(Debug, Default)]
pub(crate) struct Inherited {
    sockets: Vec<Handed>,
}

#[derive(Debug)]
struct Handed {
    name: Option<String>,
    addr: SocketAddr,
    listener: std::net::TcpListener,
}

impl Inherited {
    /// The sockets of `LISTEN_FDS` when `LISTEN_PID` is this process (or unset).
    ///
    /// # Errors
    /// When a handed-over descriptor is not a listening TCP socket: warden refuses to start
    /// rather than bind a socket of its own beside the manager's.
    pub(crate) fn from_env() -> Result<Self, StartError> {
        let mut fds = listenfd::ListenFd::from_env();
        let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
            .map(|v| v.split(':').map(str::to_owned).collect())
            .unwrap_or_default();
        let mut sockets = Vec::new();
        for index in 0..fds.len() {
            let inherited = |source| StartError::Inherited { index, source };
            let Some(listener) = fds.take_tcp_listener(index).map_err(inherited)? else {
                continue;
            };
            let addr = listener.local_addr().map_err(inherited)?;
            let name = names.get(index).filter(|n| !n.is_empty()).cloned();
            tracing::info!(index, %addr, name = name.as_deref(), "socket handed over by the service manager");
            sockets.push(Handed {
                name,
                addr,
                listener,
            });
        }
        Ok(Self { sockets })
    }

    /// The handed-over socket named `role`, or else one bound to `addr` whose name is no
    /// listener's (systemd names a socket after its unit unless told otherwise).
    fn take(&mut self, role: &str, addr: SocketAddr) -> Option<std::net::TcpListener> {
        let named_for_a_listener =
            |s: &Handed| s.name.as_deref().is_some_and(|n| ROLES.contains(&n));
        let at = self
            .sockets
            .iter()
            .position(|s| s.name.as_deref() == Some(role))
            .or_else(|| {
                self.sockets
                    .iter()
                    .position(|s| !named_for_a_listener(s) && s.addr == addr)
            })?;
        Some(self.sockets.swap_remove(at).listener)
    }

    /// Log the sockets no listener took: a `.socket` unit and a configuration that disagree.
    pub(crate) fn warn_unused(&self) {
        for s in &self.sockets {
            tracing::warn!(addr = %s.addr, name = s.name.as_deref(), "a socket handed over matches no listener; it stays unused");
        }
    }
}

/// The listener for `role`: the handed-over socket, or one bound to `addr` here; and the
/// address it is bound to (the port chosen for port 0).
pub(crate) fn acquire(
    inherited: &mut Inherited,
    role: &str,
    addr: SocketAddr,
    reuse_port: bool,
) -> Result<(TcpListener, SocketAddr), StartError> {
    let bind_error = |source| StartError::Bind { addr, source };
    let std_listener = match inherited.take(role, addr) {
        Some(listener) => listener,
        None => {
            if reuse_port && !queued_connections_migrate() {
                tracing::warn!(
                    listener = role,
                    "reuse_port is on but net.ipv4.tcp_migrate_req is 0: connections queued at this process's socket when it stops will be reset; set it to 1 (Linux 5.14+) for restarts that lose none"
                );
            }
            bind(addr, reuse_port).map_err(bind_error)?
        }
    };
    std_listener.set_nonblocking(true).map_err(bind_error)?;
    let listener = TcpListener::from_std(std_listener).map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    Ok((listener, bound))
}

/// Whether the kernel moves the connections queued at a closing `SO_REUSEPORT` socket to
/// another socket of its group (`net.ipv4.tcp_migrate_req`, Linux 5.14+, which applies to
/// IPv6 too) instead of resetting them: what makes a restart with an overlap lossless.
/// Where it cannot be read (another system), the answer is no.
fn queued_connections_migrate() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req").is_ok_and(|v| v.trim() == "1")
}

/// A socket bound here: `SO_REUSEADDR` (a restart does not wait for old connections'
/// `TIME_WAIT`), and `SO_REUSEPORT` when asked.
fn bind(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_sockets_share_a_port_only_with_reuse_port() {
        let first = bind("127.0.0.1:0".parse().unwrap(), true).unwrap();
        let addr = first.local_addr().unwrap();
        assert!(bind(addr, true).is_ok());
        let plain = bind("127.0.0.1:0".parse().unwrap(), false).unwrap();
        assert!(bind(plain.local_addr().unwrap(), false).is_err());
    }

    #[test]
    fn a_handed_socket_is_taken_by_name_before_address() {
        let a = bind("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let b = bind("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let mut inherited = Inherited {
            sockets: vec![
                Handed {
                    name: Some("warden.socket".into()),
                    addr: a_addr,
                    listener: a,
                },
                Handed {
                    name: Some("admin".into()),
                    addr: b_addr,
                    listener: b,
                },
            ],
        };
        // The configured address of the admin listener differs: the name decides.
        let admin = inherited
            .take("admin", "127.0.0.1:1".parse().unwrap())
            .unwrap();
        assert_eq!(admin.local_addr().unwrap(), b_addr);
        assert!(inherited.take("proxy", b_addr).is_none());
        let proxy = inherited.take("proxy", a_addr).unwrap();
        assert_eq!(proxy.local_addr().unwrap(), a_addr);
    }
}
