//! Where the layer learns the TCP peer's address: a request extension.
//!
//! A tower service sees no socket, so the server must put the peer address on each request.
//! The layer reads [`ClientAddr`] by default; with axum, tell it to read axum's
//! `ConnectInfo<SocketAddr>` instead (see [`crate::WardenLayer::peer_from`]) and serve the
//! app with `into_make_service_with_connect_info::<SocketAddr>()`.
//!
//! With no address on the request the peer is `0.0.0.0` (unspecified). Network rules then
//! treat it as any other address: `deny = "all"` denies it, `allow = "127.0.0.1"` does not
//! allow it, and limits keyed by `client` count every such request under one key. Apps that
//! use network rules or client-keyed limits must provide the address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Deref;

/// The TCP peer's address, as a request extension the layer reads.
///
/// Insert it in your accept loop (or in a layer outside this one) when your server does not
/// already provide the peer address as an extension the layer can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub SocketAddr);

impl Deref for ClientAddr {
    type Target = SocketAddr;

    fn deref(&self) -> &SocketAddr {
        &self.0
    }
}

impl From<SocketAddr> for ClientAddr {
    fn from(addr: SocketAddr) -> Self {
        Self(addr)
    }
}

/// Reads the peer address from a request's extensions.
pub(crate) type PeerReader = fn(&http::Extensions) -> Option<SocketAddr>;

/// The address used when no extension names the peer.
pub const UNKNOWN_PEER: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

/// Read an extension of type `T` that dereferences to the peer's address, such as axum's
/// `ConnectInfo<SocketAddr>`; [`ClientAddr`] when there is none.
pub(crate) fn read<T>(extensions: &http::Extensions) -> Option<SocketAddr>
where
    T: Deref<Target = SocketAddr> + Send + Sync + 'static,
{
    extensions
        .get::<T>()
        .map(|t| **t)
        .or_else(|| extensions.get::<ClientAddr>().map(|c| c.0))
}

/// The peer's IP address for a request, or [`UNKNOWN_PEER`].
pub(crate) fn peer_ip(reader: PeerReader, extensions: &http::Extensions) -> IpAddr {
    reader(extensions).map_or(UNKNOWN_PEER, |addr| addr.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for axum's `ConnectInfo<T>`.
    #[derive(Clone)]
    struct ConnectInfo<T>(T);

    impl<T> Deref for ConnectInfo<T> {
        type Target = T;
        fn deref(&self) -> &T {
            &self.0
        }
    }

    #[test]
    fn the_configured_extension_then_client_addr_then_unspecified() {
        let reader: PeerReader = read::<ConnectInfo<SocketAddr>>;
        let mut extensions = http::Extensions::new();
        assert_eq!(peer_ip(reader, &extensions), UNKNOWN_PEER);

        extensions.insert(ClientAddr(SocketAddr::from(([10, 0, 0, 2], 9))));
        assert_eq!(peer_ip(reader, &extensions), IpAddr::from([10, 0, 0, 2]));

        extensions.insert(ConnectInfo(SocketAddr::from(([10, 0, 0, 1], 9))));
        assert_eq!(peer_ip(reader, &extensions), IpAddr::from([10, 0, 0, 1]));
        assert_eq!(
            peer_ip(read::<ClientAddr>, &extensions),
            IpAddr::from([10, 0, 0, 2])
        );
    }
}
