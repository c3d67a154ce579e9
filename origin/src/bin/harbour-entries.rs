//! `harbour-entries COMMAND --region ID --campaign ID …`: a region's entries for the campaign
//! team and the data-protection officer, run in the region (see `harbour_origin::entries` and
//! the README). Prints to stdout; a refusal is one line on stderr and exit 1; a usage error
//! exit 2.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use harbour_origin::entries::{parse, run, USAGE};

fn main() {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            if message.is_empty() {
                println!("{USAGE}");
                std::process::exit(0);
            }
            eprintln!("harbour-entries: {message}\n{USAGE}");
            std::process::exit(2);
        }
    };
    // The one clock read: the commands take the time as an input.
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let result = match runtime {
        Ok(runtime) => runtime.block_on(run(&args, now_ms, &mut out)),
        Err(e) => Err(e.to_string()),
    };
    let flushed = out.flush();
    if let Err(message) = result {
        eprintln!("harbour-entries: {message}");
        std::process::exit(1);
    }
    if let Err(e) = flushed {
        eprintln!("harbour-entries: cannot write the output: {e}");
        std::process::exit(1);
    }
}
