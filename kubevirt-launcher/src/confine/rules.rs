//! A small builder for allow-lists: system call numbers, each allowed unconditionally or when
//! its arguments match one of a few rules.

use seccompiler::{SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule};
use std::collections::BTreeMap;

/// An allow-list being built.
#[derive(Debug, Default)]
pub struct Rules {
    pub(super) map: BTreeMap<i64, Vec<SeccompRule>>,
}

impl Rules {
    /// Allows each of `calls` whatever their arguments.
    pub fn allow(&mut self, calls: &[i64]) -> &mut Self {
        for &nr in calls {
            // An empty rule list allows the call unconditionally; an unconditional allow
            // replaces any argument rules added before.
            self.map.insert(nr, Vec::new());
        }
        self
    }

    /// Allows `nr` when argument `arg` (a 64-bit value) equals one of `values`.
    pub fn allow_arg_in(&mut self, nr: i64, arg: u8, values: &[u64]) -> &mut Self {
        let rules = values
            .iter()
            .map(|&v| rule(arg, SeccompCmpOp::Eq, v))
            .collect::<Vec<_>>();
        self.add(nr, rules)
    }

    /// Allows `nr` when argument `arg` masked with `mask` equals `value`.
    pub fn allow_masked(&mut self, nr: i64, arg: u8, mask: u64, value: u64) -> &mut Self {
        self.add(nr, vec![rule(arg, SeccompCmpOp::MaskedEq(mask), value)])
    }

    fn add(&mut self, nr: i64, rules: Vec<SeccompRule>) -> &mut Self {
        match self.map.get_mut(&nr) {
            // Already allowed whatever the arguments.
            Some(existing) if existing.is_empty() => {}
            Some(existing) => existing.extend(rules),
            None => {
                self.map.insert(nr, rules);
            }
        }
        self
    }
}

/// One condition as a rule. The arguments are constants of this module's callers, so a
/// rejected one is a programming error caught by the unit tests that build every filter.
fn rule(arg: u8, op: SeccompCmpOp, value: u64) -> SeccompRule {
    let condition = SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value)
        .expect("seccomp condition on a valid argument index");
    SeccompRule::new(vec![condition]).expect("a rule with one condition")
}
