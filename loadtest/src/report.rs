//! The result of one run: counts, errors by kind, throughput and latency percentiles, as a
//! human text block and as one JSON object.
//!
//! Invariant: `requests == ok + sum(errors)`, and rates divide by the measured wall time of
//! the whole run, including requests still in flight when the duration ended.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency percentiles in milliseconds, over successful requests only.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LatencyMs {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// The report of one scenario run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub concurrency: usize,
    /// Requests finished, successful or not.
    pub requests: u64,
    /// Requests answered with a 2xx status and a complete body.
    pub ok: u64,
    /// Failed requests by kind: an HTTP status (`"503"`) or `io`, `connect`, `short_body`.
    pub errors: BTreeMap<String, u64>,
    pub seconds: f64,
    /// Successful requests per second.
    pub req_per_s: f64,
    /// Payload bytes moved by successful requests (received for GET, sent for PUT).
    pub bytes: u64,
    /// `bytes / seconds / 1e9`.
    pub gb_per_s: f64,
    pub latency_ms: LatencyMs,
    /// The first non-2xx response seen: status and the start of its body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

impl Report {
    /// Builds a report from merged counts and a latency histogram in microseconds.
    pub fn new(
        scenario: &str,
        concurrency: usize,
        ok: u64,
        errors: BTreeMap<String, u64>,
        seconds: f64,
        bytes: u64,
        latency_us: &Histogram<u64>,
    ) -> Self {
        let requests = ok + errors.values().sum::<u64>();
        let per_second = |count: f64| if seconds > 0.0 { count / seconds } else { 0.0 };
        let latency_ms = if latency_us.is_empty() {
            LatencyMs::default()
        } else {
            let ms = |micros: u64| micros as f64 / 1000.0;
            LatencyMs {
                p50: ms(latency_us.value_at_quantile(0.50)),
                p99: ms(latency_us.value_at_quantile(0.99)),
                max: ms(latency_us.max()),
            }
        };
        Self {
            scenario: scenario.to_string(),
            concurrency,
            requests,
            ok,
            errors,
            seconds,
            req_per_s: per_second(ok as f64),
            bytes,
            gb_per_s: per_second(bytes as f64) / 1e9,
            latency_ms,
            first_error: None,
        }
    }

    /// The human-readable block.
    pub fn text(&self) -> String {
        let first_error = match &self.first_error {
            Some(first_error) => format!("first error  {first_error}\n"),
            None => String::new(),
        };
        let errors = if self.errors.is_empty() {
            "none".to_string()
        } else {
            let kinds: Vec<String> = self
                .errors
                .iter()
                .map(|(kind, count)| format!("{kind}={count}"))
                .collect();
            kinds.join(" ")
        };
        format!(
            "scenario     {}\nconcurrency  {}\nrequests     {} ({} ok)\nerrors       {}\n\
             seconds      {:.3}\nreq/s        {:.1}\nbytes        {}\nGB/s         {:.3}\n\
             latency ms   p50 {:.2}  p99 {:.2}  max {:.2}\n{first_error}",
            self.scenario,
            self.concurrency,
            self.requests,
            self.ok,
            errors,
            self.seconds,
            self.req_per_s,
            self.bytes,
            self.gb_per_s,
            self.latency_ms.p50,
            self.latency_ms.p99,
            self.latency_ms.max,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_derives_rates_and_percentiles() {
        let mut latency_us = Histogram::<u64>::new(3).unwrap();
        for micros in 1..=100u64 {
            latency_us.record(micros * 1000).unwrap();
        }
        let errors = BTreeMap::from([("503".to_string(), 2u64), ("io".to_string(), 1u64)]);
        let report = Report::new("get", 4, 100, errors, 2.0, 4_000_000_000, &latency_us);
        assert_eq!(report.requests, 103);
        assert_eq!(report.req_per_s, 50.0);
        assert_eq!(report.gb_per_s, 2.0);
        assert!(
            (report.latency_ms.p50 - 50.0).abs() < 0.1,
            "{:?}",
            report.latency_ms
        );
        assert!(
            (report.latency_ms.max - 100.0).abs() < 0.1,
            "{:?}",
            report.latency_ms
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["errors"]["503"], 2);
        assert_eq!(json["latency_ms"]["p99"], report.latency_ms.p99);
        assert!(report.text().contains("503=2 io=1"));
    }
}
