//! The metrics' label types and histogram buckets.

use std::sync::Arc;

use ollama_proxy_core::KeyName;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

/// Latency buckets in seconds: from a cached local answer to a long
/// generation (an LLM stream can run for minutes).
pub(super) const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Time to first token, in seconds: from a warm model's tens of
/// milliseconds to a cold load of a large one.
pub(super) const TTFT_BUCKETS: [f64; 14] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
/// Generation speed, tokens per second.
pub(super) const SPEED_BUCKETS: [f64; 14] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0, 1000.0,
];
/// Model load time, seconds.
pub(super) const LOAD_BUCKETS: [f64; 12] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
];
/// The most distinct `model` label values; answers for any other model are
/// counted as `other`, so clients cannot grow the series without bound.
pub(super) const MAX_MODELS: usize = 64;

pub(super) type Labels<const N: usize> = [(&'static str, &'static str); N];
pub(super) type HistogramFamily = Family<Labels<1>, Histogram, fn() -> Histogram>;

/// A key name as a label value: `-` for unauthenticated requests. The
/// names come from the configuration in force, so a reload that adds a key
/// adds its label too.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(super) struct KeyLabel(pub(super) Option<KeyName>);

impl EncodeLabelValue for KeyLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(self.0.as_ref().map_or("-", KeyName::as_str))
    }
}

/// A model name as a label value (bounded, see [`MAX_MODELS`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(super) struct ModelLabel(pub(super) Arc<str>);

impl EncodeLabelValue for ModelLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(&self.0)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ModelLabels {
    pub(super) model: ModelLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct TokenLabels {
    pub(super) key: KeyLabel,
    pub(super) model: ModelLabel,
    pub(super) kind: &'static str,
}

pub(super) type ModelHistograms = Family<ModelLabels, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct KeyLabels {
    pub(super) key: KeyLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RefusalLabels {
    pub(super) reason: &'static str,
    pub(super) key: KeyLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct BackendLabels {
    pub(super) backend: ModelLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct BackendWhyLabels {
    pub(super) backend: ModelLabel,
    pub(super) why: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RequestLabels {
    pub(super) route: &'static str,
    pub(super) status_class: &'static str,
    pub(super) key: KeyLabel,
}
