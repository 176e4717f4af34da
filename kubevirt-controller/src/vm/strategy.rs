//! The VM's effective run strategy: `spec.runStrategy`, or the deprecated `spec.running`.

use std::fmt;

use kubevirt_api::core::v1::VirtualMachineSpec;

/// What the VM controller keeps true about a VM's instance (upstream's `VirtualMachineRunStrategy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunStrategy {
    /// An instance always runs; a finished one is replaced.
    Always,
    /// Replaced when it fails; stays stopped when the guest shuts down.
    RerunOnFailure,
    /// Started and stopped only on request (`virtctl start|stop`).
    Manual,
    /// No instance runs.
    Halted,
    /// Runs once; never restarted, whatever its end.
    Once,
    /// The target of a decentralized live migration (not supported here).
    WaitAsReceiver,
}

/// Errors deciding the run strategy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrategyError {
    /// Both fields are set.
    #[error("spec.running and spec.runStrategy are mutually exclusive: set only spec.runStrategy")]
    Both,
    /// `spec.runStrategy` names no strategy.
    #[error(
        "spec.runStrategy: unknown strategy {0:?} (Always, RerunOnFailure, Manual, Halted, Once, WaitAsReceiver)"
    )]
    Unknown(String),
}

impl RunStrategy {
    /// Every strategy, in upstream's order.
    pub const ALL: [RunStrategy; 6] = [
        RunStrategy::Always,
        RunStrategy::RerunOnFailure,
        RunStrategy::Manual,
        RunStrategy::Halted,
        RunStrategy::Once,
        RunStrategy::WaitAsReceiver,
    ];

    /// The name the API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStrategy::Always => "Always",
            RunStrategy::RerunOnFailure => "RerunOnFailure",
            RunStrategy::Manual => "Manual",
            RunStrategy::Halted => "Halted",
            RunStrategy::Once => "Once",
            RunStrategy::WaitAsReceiver => "WaitAsReceiver",
        }
    }

    /// Parses the API's name.
    pub fn parse(s: &str) -> Result<Self, StrategyError> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| StrategyError::Unknown(s.to_string()))
    }

    /// The strategy `spec` asks for: `runStrategy`; else `running: true` = Always and
    /// `running: false` or neither = Halted.
    pub fn of(spec: &VirtualMachineSpec) -> Result<Self, StrategyError> {
        match (&spec.run_strategy, spec.running) {
            (Some(_), Some(_)) => Err(StrategyError::Both),
            (Some(s), None) => Self::parse(s),
            (None, Some(true)) => Ok(RunStrategy::Always),
            (None, _) => Ok(RunStrategy::Halted),
        }
    }

    /// Whether failed starts of this strategy are retried with a growing delay.
    pub fn backs_off(self) -> bool {
        matches!(
            self,
            RunStrategy::Always | RunStrategy::RerunOnFailure | RunStrategy::Once
        )
    }
}

impl fmt::Display for RunStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(run_strategy: Option<&str>, running: Option<bool>) -> VirtualMachineSpec {
        VirtualMachineSpec {
            run_strategy: run_strategy.map(Into::into),
            running,
            ..Default::default()
        }
    }

    #[test]
    fn running_maps_to_always_or_halted() {
        assert_eq!(
            RunStrategy::of(&spec(None, Some(true))),
            Ok(RunStrategy::Always)
        );
        assert_eq!(
            RunStrategy::of(&spec(None, Some(false))),
            Ok(RunStrategy::Halted)
        );
        assert_eq!(RunStrategy::of(&spec(None, None)), Ok(RunStrategy::Halted));
    }

    #[test]
    fn every_name_round_trips_and_bad_ones_are_named() {
        for r in RunStrategy::ALL {
            assert_eq!(RunStrategy::of(&spec(Some(r.as_str()), None)), Ok(r));
        }
        let e = RunStrategy::of(&spec(Some("always"), None)).unwrap_err();
        assert!(e.to_string().contains("spec.runStrategy"), "{e}");
        assert_eq!(
            RunStrategy::of(&spec(Some("Always"), Some(true))),
            Err(StrategyError::Both)
        );
    }
}
