//! Expected against observed: one verdict per row, `pass` or `FAIL: expected … saw …`.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;

use serde::Serialize;

use super::expect::Expectation;
use super::ProbeResult;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    Pass,
    Fail,
}

/// The verdict of one row; `mismatch` says what differed when it failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    pub verdict: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mismatch: Option<String>,
}

impl Verdict {
    pub fn pass() -> Self {
        Self {
            verdict: Outcome::Pass,
            mismatch: None,
        }
    }

    pub fn fail(mismatch: String) -> Self {
        Self {
            verdict: Outcome::Fail,
            mismatch: Some(mismatch),
        }
    }

    pub fn passed(&self) -> bool {
        self.verdict == Outcome::Pass
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.mismatch {
            None => write!(f, "pass"),
            Some(mismatch) => write!(f, "FAIL: {mismatch}"),
        }
    }
}

/// What a probe saw, in the words the verdict and the table use.
pub fn observed(result: &ProbeResult) -> String {
    match (result.seen_source, &result.seen_as) {
        (Some(ip), _) if ip == result.source_address => format!("reachable as {ip} (itself)"),
        (Some(ip), Some(who)) => format!("reachable as {ip} ({who})"),
        (Some(ip), None) => format!("reachable as {ip}"),
        (None, _) => format!(
            "blocked ({})",
            result.error.as_deref().unwrap_or("no answer")
        ),
    }
}

/// The verdict on one probe.
pub fn judge(expected: &Expectation, result: &ProbeResult) -> Verdict {
    let saw = || observed(result);
    match (expected, result.seen_source) {
        (Expectation::Blocked { .. }, None) => Verdict::pass(),
        (Expectation::Blocked { .. }, Some(_)) => {
            Verdict::fail(format!("expected blocked, saw {}", saw()))
        }
        (Expectation::Reachable { .. }, None) => {
            Verdict::fail(format!("expected {}, saw {}", short(expected), saw()))
        }
        (Expectation::Reachable { source, .. }, Some(seen)) => match source {
            Some(want) if want.address != seen => {
                Verdict::fail(format!("expected {}, saw {}", short(expected), saw()))
            }
            _ => Verdict::pass(),
        },
    }
}

/// The verdict on one service backend: it must answer, and see only the expected
/// source address.
pub fn judge_backend(
    expected: &Expectation,
    answers: usize,
    seen_sources: &BTreeSet<Ipv4Addr>,
) -> Verdict {
    let seen: Vec<String> = seen_sources.iter().map(Ipv4Addr::to_string).collect();
    match expected {
        Expectation::Blocked { .. } if answers == 0 => Verdict::pass(),
        Expectation::Blocked { .. } => Verdict::fail(format!(
            "expected blocked, saw {answers} answers from {}",
            seen.join(", ")
        )),
        Expectation::Reachable { .. } if answers == 0 => Verdict::fail(format!(
            "expected {}, saw no answer from this backend",
            short(expected)
        )),
        Expectation::Reachable {
            source: Some(want), ..
        } if seen_sources.iter().any(|s| *s != want.address) => Verdict::fail(format!(
            "expected {}, saw {}",
            short(expected),
            seen.join(", ")
        )),
        Expectation::Reachable { .. } => Verdict::pass(),
    }
}

/// The expectation without its reason (the reason is in the EXPECTED column already).
fn short(expected: &Expectation) -> String {
    match expected {
        Expectation::Blocked { .. } => "blocked".into(),
        reachable => reachable.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::expect::ExpectedSource;
    use super::*;
    use crate::model::Protocol;

    fn result(seen: Option<Ipv4Addr>) -> ProbeResult {
        ProbeResult {
            path: "p".into(),
            source: "a".into(),
            source_address: Ipv4Addr::new(10, 0, 0, 1),
            destination: "b".into(),
            destination_address: Ipv4Addr::new(10, 0, 0, 2),
            protocol: Protocol::Tcp,
            port: 17001,
            connected: seen.is_some(),
            seen_source: seen,
            seen_as: None,
            error: seen.is_none().then(|| "no answer within 300 ms".into()),
            elapsed_ms: 1,
        }
    }

    fn reachable_as(address: Ipv4Addr) -> Expectation {
        Expectation::Reachable {
            source: Some(ExpectedSource {
                address,
                who: "itself".into(),
            }),
            why: String::new(),
        }
    }

    #[test]
    fn every_combination_of_expected_and_observed() {
        let me = Ipv4Addr::new(10, 0, 0, 1);
        let node = Ipv4Addr::new(10, 0, 0, 9);
        let blocked = Expectation::Blocked { reason: "r".into() };
        assert!(judge(&blocked, &result(None)).passed());
        let v = judge(&blocked, &result(Some(me)));
        assert_eq!(
            v.to_string(),
            "FAIL: expected blocked, saw reachable as 10.0.0.1 (itself)"
        );
        assert!(judge(&reachable_as(me), &result(Some(me))).passed());
        let v = judge(&reachable_as(me), &result(Some(node)));
        assert_eq!(
            v.to_string(),
            "FAIL: expected reachable as 10.0.0.1 (itself), saw reachable as 10.0.0.9"
        );
        let v = judge(&reachable_as(me), &result(None));
        assert!(
            v.to_string()
                .contains("saw blocked (no answer within 300 ms)"),
            "{v}"
        );
        let any = Expectation::Reachable {
            source: None,
            why: String::new(),
        };
        assert!(judge(&any, &result(Some(node))).passed());
    }

    #[test]
    fn a_backend_must_answer_and_see_only_the_expected_source() {
        let me = Ipv4Addr::new(10, 0, 0, 1);
        let other = Ipv4Addr::new(10, 0, 0, 9);
        let want = reachable_as(me);
        assert!(judge_backend(&want, 3, &BTreeSet::from([me])).passed());
        assert!(!judge_backend(&want, 0, &BTreeSet::new()).passed());
        assert!(!judge_backend(&want, 3, &BTreeSet::from([me, other])).passed());
    }
}
