//! Prometheus metrics served at `/metrics`: requests by route and status,
//! pulls by outcome, pull and conversion durations, bytes moved.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use shifter_api::ImageStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: String,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    jobs_started: Counter,
    pulls: Family<StatusLabels, Counter>,
    durations: Family<PhaseLabels, Histogram, fn() -> Histogram>,
    downloaded: Counter,
    published: Counter,
    auth_failures: Family<ReasonLabels, Counter>,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 14))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("shifter_imagegw");
        let requests = Family::<RequestLabels, Counter>::default();
        let jobs_started = Counter::default();
        let pulls = Family::<StatusLabels, Counter>::default();
        let durations = Family::<PhaseLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_histogram,
        );
        let downloaded = Counter::default();
        let published = Counter::default();
        let auth_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "auth_failures",
            "Refused credentials by reason (missing, expired, replayed, invalid, unbound: made for another service or request)",
            auth_failures.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        registry.register(
            "pull_jobs_started",
            "Pull jobs started (joined pulls not counted)",
            jobs_started.clone(),
        );
        registry.register("pulls", "Finished pull jobs by final status", pulls.clone());
        registry.register(
            "pull_duration_seconds",
            "Duration of pull jobs (phase=total) and of pull+conversion (phase=conversion)",
            durations.clone(),
        );
        registry.register(
            "bytes_downloaded",
            "Bytes downloaded from registries",
            downloaded.clone(),
        );
        registry.register(
            "bytes_published",
            "Bytes of squashfs images published",
            published.clone(),
        );
        Metrics {
            registry,
            requests,
            jobs_started,
            pulls,
            durations,
            downloaded,
            published,
            auth_failures,
        }
    }

    pub fn auth_failure(&self, reason: &str) {
        self.auth_failures
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn request(&self, method: &str, route: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status,
            })
            .inc();
    }

    pub fn job_started(&self) {
        self.jobs_started.inc();
    }

    pub fn job_finished(&self, status: ImageStatus, took: Duration) {
        self.pulls
            .get_or_create(&StatusLabels {
                status: status.as_str().to_owned(),
            })
            .inc();
        self.durations
            .get_or_create(&PhaseLabels {
                phase: "total".into(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn conversion_finished(&self, took: Duration) {
        self.durations
            .get_or_create(&PhaseLabels {
                phase: "conversion".into(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn bytes_downloaded(&self, n: u64) {
        self.downloaded.inc_by(n);
    }

    pub fn bytes_published(&self, n: u64) {
        self.published.inc_by(n);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("metrics encode into a String");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_metrics_show_requests_pulls_and_bytes() {
        let m = Metrics::new();
        m.request("GET", "/api/lookup/{system}/{type}/{tag}/", 200);
        m.job_started();
        m.job_finished(ImageStatus::Ready, Duration::from_millis(300));
        m.bytes_published(4096);
        m.auth_failure("replayed");
        let text = m.render();
        assert!(text.contains("shifter_imagegw_http_requests_total{method=\"GET\",route=\"/api/lookup/{system}/{type}/{tag}/\",status=\"200\"} 1"), "{text}");
        assert!(
            text.contains("shifter_imagegw_pulls_total{status=\"READY\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("shifter_imagegw_pull_jobs_started_total 1"),
            "{text}"
        );
        assert!(
            text.contains("shifter_imagegw_auth_failures_total{reason=\"replayed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("shifter_imagegw_bytes_published_total 4096"),
            "{text}"
        );
        assert!(
            text.contains("shifter_imagegw_pull_duration_seconds_count{phase=\"total\"} 1"),
            "{text}"
        );
    }
}
