//! Reading a deployment second by second into a [`Recording`]: every origin's operations listener
//! each time, the edge's data points over a longer window (they arrive late).

use harbour_policy::Policy;

use crate::http::Client;
use crate::recording::{EdgeRow, OriginName, OriginSecond, Recording};
use crate::sources::{edge_rows, origin_seconds};
use crate::target::{Edge, Target};

/// Seconds an origin is read back (a poll missed is filled in by the next).
const ORIGIN_WINDOW_S: u64 = 10;

/// What reads the deployment: the sources, and the token for the edge's.
#[derive(Clone)]
pub struct Reader {
    client: Client,
    target: Target,
    /// The Analytics Engine SQL API token: used for the API, never written anywhere.
    token: Option<String>,
    campaign: Option<String>,
}

/// An origin's label and what reading its seconds gave.
type OriginReading = (String, Result<Vec<(u64, OriginSecond)>, String>);

/// One poll's findings, not yet kept.
pub struct Reading {
    origins: Vec<OriginReading>,
    /// From which second the edge was read, and what it said.
    edge: Option<(u64, Result<Vec<EdgeRow>, String>)>,
}

impl Reader {
    /// How far back the edge is read.
    pub fn edge_window_s(&self) -> u64 {
        match self.target.edge {
            Edge::AnalyticsEngine { .. } => 180,
            _ => 30,
        }
    }

    /// Reads every origin's last seconds, and the edge's too when `edge` says.
    pub fn read(&self, now_s: u64, edge: bool) -> Reading {
        let origins = self
            .target
            .origins
            .iter()
            .map(|origin| {
                let since = now_s.saturating_sub(ORIGIN_WINDOW_S);
                (origin.label(), origin_seconds(&self.client, origin, since))
            })
            .collect();
        let edge = edge.then(|| {
            let since = now_s.saturating_sub(self.edge_window_s());
            let rows = edge_rows(
                &self.client,
                &self.target.edge,
                self.token.as_deref(),
                self.campaign.as_deref(),
                since,
            );
            (since, rows)
        });
        Reading { origins, edge }
    }
}

/// What is read, and what it made of it.
pub struct Collector {
    pub reader: Reader,
    pub recording: Recording,
    /// What could not be read at the last poll, one line per source.
    pub problems: Vec<String>,
}

impl Collector {
    pub fn new(
        policy: &Policy,
        target: Target,
        token: Option<String>,
        campaign: Option<String>,
        title: &str,
    ) -> Collector {
        let regions = policy
            .regions
            .iter()
            .map(|r| (r.id.clone(), r.name.clone()))
            .collect();
        let origins = target
            .origins
            .iter()
            .map(|o| OriginName {
                label: o.label(),
                region: o.region.clone(),
            })
            .collect();
        let mut recording = Recording::new(title, regions, origins);
        recording.edge_source = match &target.edge {
            Edge::None => "none: this stack records no data points at the edge (wrangler dev does not simulate Analytics Engine); the origins' figures are shown".into(),
            Edge::Recorder(url) => format!("the local recorder at {url}"),
            Edge::AnalyticsEngine { dataset, .. } => {
                format!("Workers Analytics Engine, dataset {dataset} (a few minutes behind)")
            }
        };
        Collector {
            reader: Reader {
                client: Client::new(std::time::Duration::from_secs(3), 4),
                target,
                token,
                campaign,
            },
            recording,
            problems: Vec::new(),
        }
    }

    /// Keeps what a poll found.
    pub fn apply(&mut self, reading: Reading) {
        let mut problems = Vec::new();
        for (label, read) in reading.origins {
            match read {
                Ok(seconds) => self.recording.origin(&label, seconds),
                Err(e) => problems.push(format!("origin {label}: {e}")),
            }
        }
        if let Some((since, read)) = reading.edge {
            match read {
                Ok(rows) => self.recording.edge(since, rows),
                Err(e) => problems.push(format!("edge: {e}")),
            }
        }
        self.problems = problems;
    }

    /// Reads the deployment and keeps what it found.
    pub fn poll(&mut self, now_s: u64, edge: bool) {
        let reading = self.reader.read(now_s, edge);
        self.apply(reading);
    }
}
