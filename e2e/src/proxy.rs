//! Things a test puts where an origin should be, to make it fail in one particular way: an
//! origin whose answers are lost after it committed (`AnswerSwallower`), and one that accepts
//! connections and never answers (`Blackhole`). Each runs on a thread of its own for at most
//! two minutes and stops on drop.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A relay from `listen` to the origin on `upstream` that passes every request on and swallows
/// every answer: the origin does its work (and commits) but its answer never reaches the caller,
/// whose connection stays open until it gives up. What the caller meets is an origin that
/// committed and then never answered.
pub struct AnswerSwallower {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    swallowed: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AnswerSwallower {
    pub fn bind(listen: u16, upstream: u16) -> AnswerSwallower {
        use std::sync::atomic::Ordering::Relaxed;
        let listener = TcpListener::bind(("127.0.0.1", listen)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let swallowed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (flag, sink) = (stop.clone(), swallowed.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut relays = Vec::new();
            while !flag.load(Relaxed) && Instant::now() < deadline {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let Ok(mut origin) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let _ = origin.set_read_timeout(Some(Duration::from_millis(100)));
                let (flag, sink) = (flag.clone(), sink.clone());
                relays.push(std::thread::spawn(move || {
                    // Requests go up; answers are read and kept, never sent down.
                    let mut up = origin.try_clone().unwrap();
                    let mut down = client.try_clone().unwrap();
                    let pump = std::thread::spawn(move || {
                        let _ = std::io::copy(&mut down, &mut up);
                        let _ = up.shutdown(std::net::Shutdown::Write);
                    });
                    let mut buffer = [0u8; 4096];
                    while !flag.load(Relaxed) && Instant::now() < deadline {
                        match origin.read(&mut buffer) {
                            Ok(0) => break,
                            Ok(n) => sink.lock().unwrap().extend_from_slice(&buffer[..n]),
                            Err(e)
                                if e.kind() == std::io::ErrorKind::WouldBlock
                                    || e.kind() == std::io::ErrorKind::TimedOut => {}
                            Err(_) => break,
                        }
                    }
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    let _ = pump.join();
                }));
            }
            for relay in relays {
                let _ = relay.join();
            }
        });
        AnswerSwallower {
            stop,
            swallowed,
            thread: Some(thread),
        }
    }

    /// Every byte the origin answered, none of which reached the caller.
    pub fn swallowed(&self) -> String {
        String::from_utf8_lossy(&self.swallowed.lock().unwrap()).into_owned()
    }
}

impl Drop for AnswerSwallower {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A listener that accepts connections and never answers: an origin that hangs.
pub struct Blackhole {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Blackhole {
    pub fn bind(port: u16) -> Blackhole {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(120);
            while !flag.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                if let Ok((stream, _)) = listener.accept() {
                    held.push(stream);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Blackhole {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
