//! The benchmark cut: in a build with the `bench-cuts` feature, the plugin configuration key
//! `bench_cut` stops the request path at a named stage boundary, so `benches/load/run` can price
//! each stage of the filter inside Envoy. A release build has no such key (the configuration
//! refuses it like any unknown key), and [`Cut::at`] is then constant false.

/// A boundary of the request path where a benchmark build may let the request through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    /// The request (headers and body) is read: nothing parsed or decided yet.
    Read,
    /// Normalized (strict parse, actions, risk scan): nothing decided yet.
    Normalized,
    /// Decided and enforced: receipts are sealed next.
    Sealing,
    /// Sealed: an allowed request's outputs (filter state, headers, metric) are written next.
    WriteBack,
}

#[cfg(feature = "bench-cuts")]
/// Where a benchmark build cuts the request path (`bench_cut`; `benches/load/README.md`). A build
/// with a cut set does not enforce: it exists to price the parts of the filter in Envoy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// `after_body`: let the request through once it is read.
    AfterBody,
    /// `after_normalize`: once it is normalized.
    AfterNormalize,
    /// `no_writes`: decide and enforce, but seal no receipt and write nothing back for an
    /// allowed request.
    NoWrites,
    /// `no_receipts`: everything but the receipt (no digest, seal, header or filter state).
    NoReceipts,
}

#[cfg(feature = "bench-cuts")]
impl Cut {
    /// Every cut with its configuration name.
    pub const ALL: [(&'static str, Cut); 4] = [
        ("after_body", Cut::AfterBody),
        ("after_normalize", Cut::AfterNormalize),
        ("no_writes", Cut::NoWrites),
        ("no_receipts", Cut::NoReceipts),
    ];

    /// The cut named `name` in the configuration.
    pub fn from_name(name: &str) -> Option<Cut> {
        Cut::ALL
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| c)
    }

    /// Whether this cut skips what follows `stage`.
    pub(crate) fn at(self, stage: Stage) -> bool {
        matches!(
            (self, stage),
            (Cut::AfterBody, Stage::Read)
                | (Cut::AfterNormalize, Stage::Normalized)
                | (Cut::NoWrites, Stage::Sealing | Stage::WriteBack)
                | (Cut::NoReceipts, Stage::Sealing)
        )
    }
}
