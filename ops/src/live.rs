//! The live view: a page on 127.0.0.1 that redraws the last minutes every second, while a thread
//! reads the deployment (see `collect`) each second. What the page gets is the series; the token
//! the edge's figures are read with stays in this process.
//!
//! It runs until `stop` is set or its time is up, and can write what it recorded to a file every
//! few seconds (a broadcast report is made from it afterwards: `harbour-live --report`).

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::collect::Collector;
use crate::http::{answer, Page};
use crate::page::{CHARTS_JS, LIVE_CSP, LIVE_HTML, LIVE_JS, STYLE_CSS, UPLOT_CSS, UPLOT_JS};

/// The minutes the page shows.
pub const SHOWN_SECONDS: u64 = 600;
/// Seconds at the end the page leaves out: an isolate hands a second's data points over with its
/// first decision after the second is over, so the last second or two are not yet whole.
pub const SETTLING_SECONDS: u64 = 2;
/// How often the recording file is written.
const RECORD_EVERY: Duration = Duration::from_secs(5);

/// How a live view runs.
pub struct Run {
    /// Where to write the recording, if anywhere.
    pub record: Option<PathBuf>,
    /// When to stop.
    pub until: Instant,
    /// How often the edge is read (every poll for a local recorder; the SQL API less often).
    pub edge_every: Duration,
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What a request for `target` gets.
fn route(collector: &Mutex<Collector>, target: &str) -> Page {
    let path = target.split('?').next().unwrap_or_default();
    match path {
        "/" => Page::ok("text/html; charset=utf-8", LIVE_HTML),
        "/live.js" => Page::ok("text/javascript; charset=utf-8", LIVE_JS),
        "/charts.js" => Page::ok("text/javascript; charset=utf-8", CHARTS_JS),
        "/uplot.js" => Page::ok("text/javascript; charset=utf-8", UPLOT_JS),
        "/uplot.css" => Page::ok("text/css; charset=utf-8", UPLOT_CSS),
        "/style.css" => Page::ok("text/css; charset=utf-8", STYLE_CSS),
        "/data" => {
            let collector = collector.lock().unwrap_or_else(|e| e.into_inner());
            let data = json!({
                "series": collector.recording.series(
                    Some(SHOWN_SECONDS),
                    Some(now_s().saturating_sub(SETTLING_SECONDS)),
                ),
                "problems": collector.problems,
            });
            Page::ok("application/json", data.to_string())
        }
        _ => Page::not_found(),
    }
}

/// Serves the page on `listener` and reads the deployment every second, until `stop` or
/// `run.until`. Returns the collector, with what it recorded.
pub fn serve(
    listener: TcpListener,
    collector: Collector,
    run: Run,
    stop: &AtomicBool,
) -> Collector {
    let shared = Arc::new(Mutex::new(collector));
    let headers = [
        ("content-security-policy", LIVE_CSP),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ];
    let _ = listener.set_nonblocking(true);
    std::thread::scope(|scope| {
        scope.spawn(|| poll(&shared, &run, stop));
        while !stop.load(Ordering::Relaxed) && Instant::now() < run.until {
            match listener.accept() {
                Ok((stream, _)) => {
                    let _ = stream.set_nonblocking(false);
                    let shared = shared.clone();
                    scope.spawn(move || {
                        let _ = answer(stream, &headers, &|target| route(&shared, target));
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    match Arc::try_unwrap(shared) {
        Ok(mutex) => mutex.into_inner().unwrap_or_else(|e| e.into_inner()),
        // Every thread of the scope has ended, so no other holder is left.
        Err(shared) => {
            let mut collector = shared.lock().unwrap_or_else(|e| e.into_inner());
            let reader = collector.reader.clone();
            Collector {
                reader,
                recording: std::mem::take(&mut collector.recording),
                problems: std::mem::take(&mut collector.problems),
            }
        }
    }
}

/// Reads the deployment each second until told to stop, and writes the recording now and then.
fn poll(shared: &Mutex<Collector>, run: &Run, stop: &AtomicBool) {
    let reader = shared
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .reader
        .clone();
    let mut last_edge: Option<Instant> = None;
    let mut last_record = Instant::now();
    while !stop.load(Ordering::Relaxed) && Instant::now() < run.until {
        let started = Instant::now();
        let edge = last_edge.is_none_or(|at| at.elapsed() >= run.edge_every);
        if edge {
            last_edge = Some(started);
        }
        // Read without the lock, so the page is never held up by a slow source.
        let reading = reader.read(now_s(), edge);
        shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .apply(reading);
        if let Some(file) = &run.record {
            if last_record.elapsed() >= RECORD_EVERY {
                last_record = Instant::now();
                let collector = shared.lock().unwrap_or_else(|e| e.into_inner());
                if let Err(e) = write_recording(&collector, file) {
                    eprintln!("harbour-live: {e}");
                }
            }
        }
        let rest = Duration::from_secs(1).saturating_sub(started.elapsed());
        std::thread::sleep(rest);
    }
    if let Some(file) = &run.record {
        let collector = shared.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = write_recording(&collector, file) {
            eprintln!("harbour-live: {e}");
        }
    }
}

/// Writes the recording to `file` whole (a temporary file renamed over it).
pub fn write_recording(collector: &Collector, file: &std::path::Path) -> Result<(), String> {
    let text = serde_json::to_string(&collector.recording).map_err(|e| e.to_string())?;
    let partial = file.with_extension("partial");
    std::fs::write(&partial, text).map_err(|e| format!("{}: {e}", partial.display()))?;
    std::fs::rename(&partial, file).map_err(|e| format!("{}: {e}", file.display()))
}
