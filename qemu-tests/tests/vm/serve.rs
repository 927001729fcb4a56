//! A one-file HTTP server on host loopback, for what a guest fetches from
//! 10.0.2.2 (QEMU's user networking maps that address to the host's
//! 127.0.0.1). It answers GET of its one path and counts the requests.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Serves `body` at `path` until dropped.
#[derive(Debug)]
pub struct ServeFile {
    pub port: u16,
    served: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ServeFile {
    pub fn start(path: &str, body: String) -> ServeFile {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("a non-blocking listener");
        let port = listener.local_addr().expect("a bound address").port();
        let served = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (path, counter, stopping) = (path.to_string(), served.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if answer(stream, &path, &body) {
                            counter.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        });
        ServeFile { port, served, stop, thread: Some(thread) }
    }

    /// How many times the file was served.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::Relaxed)
    }
}

impl Drop for ServeFile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answers one request; true when it was a GET of `path`.
fn answer(stream: TcpStream, path: &str, body: &str) -> bool {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(&stream);
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return false;
    }
    // The headers, up to the empty line.
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line.trim_end() != "" {
        line.clear();
    }
    let wanted = request.split_whitespace().take(2).eq(["GET", path]);
    let (status, content) = if wanted { ("200 OK", body) } else { ("404 Not Found", "") };
    let response =
        format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{content}", content.len());
    let _ = (&stream).write_all(response.as_bytes());
    wanted
}
