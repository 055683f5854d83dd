//! A fault-injecting TCP proxy on loopback, in front of Azurite: it can
//! answer new connections with HTTP 503 (a storm), or hold each new
//! connection before forwarding it (a slow endpoint). Everything else is
//! passed through byte for byte.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What the proxy does to the next connections.
#[derive(Debug, Default)]
pub struct Faults {
    /// Answer this many more connections with `503 Service Unavailable`.
    pub fail_next: AtomicU64,
    /// Hold each connection this many milliseconds before forwarding it.
    pub delay_ms: AtomicU64,
    /// Connections answered with 503 so far.
    pub failed: AtomicU64,
    /// Connections being forwarded (their client side), to cut.
    live: std::sync::Mutex<Vec<TcpStream>>,
}

impl Faults {
    /// Starts a storm of `n` refusals, cutting the connections in use so
    /// that the client must open new ones (and meet the storm).
    pub fn storm(&self, n: u64) {
        self.fail_next.store(n, Ordering::SeqCst);
        for c in self.live.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

pub struct Proxy {
    pub port: u16,
    pub faults: Arc<Faults>,
}

impl Proxy {
    /// Listens on a free loopback port, forwarding to `target` (a port).
    pub fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let faults = Arc::new(Faults::default());
        let f = Arc::clone(&faults);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let f = Arc::clone(&f);
                std::thread::spawn(move || serve(client, target, &f));
            }
        });
        Proxy { port, faults }
    }

    /// `url` (an Azurite URL) through this proxy.
    pub fn url(&self, url: &str, azurite_port: u16) -> String {
        url.replacen(
            &format!("127.0.0.1:{azurite_port}"),
            &format!("127.0.0.1:{}", self.port),
            1,
        )
    }
}

fn serve(mut client: TcpStream, target: u16, f: &Faults) {
    let storm = f
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if storm {
        f.failed.fetch_add(1, Ordering::SeqCst);
        // Read the request's head, then refuse it.
        let _ = client.set_read_timeout(Some(Duration::from_secs(2)));
        let mut buf = [0u8; 8192];
        let _ = client.read(&mut buf);
        let _ = client.write_all(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    std::thread::sleep(Duration::from_millis(f.delay_ms.load(Ordering::SeqCst)));
    let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
        return;
    };
    if let Ok(c) = client.try_clone() {
        f.live.lock().unwrap().push(c);
    }
    let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut s2);
        let _ = s2.shutdown(Shutdown::Write);
    });
    let (mut s, mut c) = (server, client);
    let _ = std::io::copy(&mut s, &mut c);
    let _ = c.shutdown(Shutdown::Write);
    let _ = up.join();
}
