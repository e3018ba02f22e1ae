//! `aksnet check --expect FILE`: the user's own assertions, in YAML, checked like the
//! matrix's rows.
//!
//! ```yaml
//! - { from: nodepool1-0-pod0, to: internet, expect: reachable, source: node }
//! - { from: on-prem, to: nodepool1-0-pod0, port: 8080, protocol: TCP, expect: blocked }
//! ```
//!
//! `from` and `to` name endpoints as `check` prints them (pods, nodes, `on-prem`,
//! `internet`); `port` defaults to the check port, `protocol` to TCP; `source` (only with
//! `reachable`) is what the destination should see: `pod` or `itself` (the source's own
//! address), `node` (the source pod's node), or an address.

use std::net::Ipv4Addr;

use serde::Deserialize;

use super::expect::{Expectation, ExpectedSource};
use super::probe::{BLOCKED_TIMEOUT, CHECK_PORT, REACHABLE_TIMEOUT};
use super::{Endpoint, EndpointKind, Probe};
use crate::model::Protocol;

/// One assertion as written.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserExpectation {
    pub from: String,
    pub to: String,
    pub port: Option<u16>,
    pub protocol: Option<String>,
    pub expect: Reach,
    pub source: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reach {
    Reachable,
    Blocked,
}

/// A file that cannot be checked: not YAML, an unknown field, a name that is no
/// endpoint. `aksnet check` exits with 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpectFileError {
    /// Not YAML, or not a list of assertions; `message` carries the line and column.
    #[error("{message}")]
    Syntax {
        message: String,
        line: Option<usize>,
        column: Option<usize>,
    },
    #[error("[{index}].{field}: {message}")]
    Invalid {
        index: usize,
        field: &'static str,
        message: String,
    },
}

/// The YAML parsing of an expectations file, in one place (so the YAML library can be
/// swapped here alone).
pub fn parse(yaml: &str) -> Result<Vec<UserExpectation>, ExpectFileError> {
    serde_norway::from_str(yaml).map_err(|err| {
        let location = err.location();
        ExpectFileError::Syntax {
            message: err.to_string(),
            line: location.as_ref().map(|l| l.line()),
            column: location.as_ref().map(|l| l.column()),
        }
    })
}

/// Probes and expectations for `assertions` over `endpoints`.
pub fn resolve(
    assertions: &[UserExpectation],
    endpoints: &[Endpoint],
) -> Result<Vec<(Probe, Expectation)>, ExpectFileError> {
    assertions
        .iter()
        .enumerate()
        .map(|(index, assertion)| resolve_one(index, assertion, endpoints))
        .collect()
}

fn resolve_one(
    index: usize,
    assertion: &UserExpectation,
    endpoints: &[Endpoint],
) -> Result<(Probe, Expectation), ExpectFileError> {
    let invalid = |field, message: String| ExpectFileError::Invalid {
        index,
        field,
        message,
    };
    let find = |field, name: &str| {
        endpoints
            .iter()
            .position(|e| e.label == name)
            .ok_or_else(|| {
                let valid: Vec<&str> = endpoints.iter().map(|e| e.label.as_str()).collect();
                invalid(
                    field,
                    format!(
                        "no endpoint named {name:?}; the cluster has: {}",
                        valid.join(", ")
                    ),
                )
            })
    };
    let source = find("from", &assertion.from)?;
    let destination = find("to", &assertion.to)?;
    let port = assertion.port.unwrap_or(CHECK_PORT);
    if port == 0 {
        return Err(invalid("port", "0 is not a port; use 1-65535".into()));
    }
    let protocol = match assertion.protocol.as_deref().map(str::to_ascii_uppercase) {
        None => Protocol::Tcp,
        Some(p) if p == "TCP" => Protocol::Tcp,
        Some(p) if p == "UDP" => Protocol::Udp,
        Some(other) => {
            return Err(invalid(
                "protocol",
                format!("{other:?} is not a protocol the check probes; use TCP or UDP"),
            ))
        }
    };
    let why = format!("your expectation [{index}]");
    let expectation = match (assertion.expect, &assertion.source) {
        (Reach::Blocked, Some(_)) => {
            return Err(invalid(
                "source",
                "a blocked connection has no source to see; drop `source` or expect reachable"
                    .into(),
            ))
        }
        (Reach::Blocked, None) => Expectation::Blocked { reason: why },
        (Reach::Reachable, None) => Expectation::Reachable { source: None, why },
        (Reach::Reachable, Some(seen)) => Expectation::Reachable {
            source: Some(
                expected_source(&endpoints[source], seen, endpoints)
                    .map_err(|message| invalid("source", message))?,
            ),
            why,
        },
    };
    let probe = Probe {
        port,
        protocol,
        timeout: if expectation.is_blocked() {
            BLOCKED_TIMEOUT
        } else {
            REACHABLE_TIMEOUT
        },
        ..Probe::new(
            source,
            destination,
            format!("expect[{index}] {} -> {}", assertion.from, assertion.to),
        )
    };
    Ok((probe, expectation))
}

fn expected_source(
    source: &Endpoint,
    written: &str,
    endpoints: &[Endpoint],
) -> Result<ExpectedSource, String> {
    match written {
        "pod" | "itself" => Ok(ExpectedSource {
            address: source.address,
            who: "itself".into(),
        }),
        "node" => {
            let EndpointKind::Pod { node } = &source.kind else {
                return Err(format!(
                    "`node` means the source pod's node, but {} is not a pod; use itself or an address",
                    source.label
                ));
            };
            endpoints
                .iter()
                .find(|e| &e.label == node)
                .map(|e| ExpectedSource {
                    address: e.address,
                    who: format!("node {node}"),
                })
                .ok_or_else(|| format!("node {node} of {} is not in the cluster", source.label))
        }
        other => {
            let address: Ipv4Addr = other.parse().map_err(|_| {
                format!("{other:?} is neither pod, itself, node nor an IPv4 address")
            })?;
            let who = if address == source.address {
                "itself".to_owned()
            } else {
                endpoints
                    .iter()
                    .find(|e| e.address == address)
                    .map_or_else(|| "as written".to_owned(), |e| e.label.clone())
            };
            Ok(ExpectedSource { address, who })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints() -> Vec<Endpoint> {
        let at = |label: &str, kind, address: [u8; 4]| Endpoint {
            label: label.into(),
            kind,
            namespace: String::new(),
            address: Ipv4Addr::from(address),
        };
        vec![
            at(
                "np-0-pod0",
                EndpointKind::Pod {
                    node: "np-0".into(),
                },
                [10, 224, 0, 6],
            ),
            at(
                "np-0",
                EndpointKind::Node {
                    name: "np-0".into(),
                },
                [10, 224, 0, 4],
            ),
            at("internet", EndpointKind::Internet, [203, 0, 113, 10]),
        ]
    }

    #[test]
    fn assertions_become_probes_with_their_expectations() {
        let yaml = "- { from: np-0-pod0, to: internet, expect: reachable, source: node }\n- { from: internet, to: np-0, port: 80, protocol: udp, expect: blocked }\n";
        let resolved = resolve(&parse(yaml).expect("valid"), &endpoints()).expect("resolves");
        let (probe, expectation) = &resolved[0];
        assert_eq!(
            (probe.source, probe.destination, probe.port),
            (0, 2, CHECK_PORT)
        );
        assert_eq!(
            expectation.to_string(),
            "reachable as 10.224.0.4 (node np-0)"
        );
        let (probe, expectation) = &resolved[1];
        assert_eq!((probe.port, probe.protocol), (80, Protocol::Udp));
        assert_eq!(probe.timeout, BLOCKED_TIMEOUT);
        assert!(expectation.is_blocked());
    }

    #[test]
    fn unknown_fields_are_rejected_with_line_and_column() {
        let yaml = "- from: np-0-pod0\n  to: internet\n  expect: reachable\n  sorce: node\n";
        match parse(yaml).expect_err("unknown field") {
            ExpectFileError::Syntax {
                message,
                line,
                column,
            } => {
                assert!(message.contains("sorce"), "{message}");
                assert_eq!(line, Some(4), "{message}");
                assert!(column.is_some(), "{message}");
            }
            other => panic!("expected a syntax error, got {other}"),
        }
    }

    #[test]
    fn an_unknown_name_lists_the_valid_ones() {
        let yaml = "- { from: np-9-pod0, to: internet, expect: blocked }\n";
        let err = resolve(&parse(yaml).expect("valid"), &endpoints()).expect_err("no such pod");
        assert_eq!(
            err.to_string(),
            "[0].from: no endpoint named \"np-9-pod0\"; the cluster has: np-0-pod0, np-0, internet"
        );
    }

    #[test]
    fn a_source_must_make_sense() {
        let bad = [
            "- { from: internet, to: np-0, expect: reachable, source: node }\n",
            "- { from: np-0-pod0, to: np-0, expect: blocked, source: pod }\n",
            "- { from: np-0-pod0, to: np-0, expect: reachable, source: someone }\n",
            "- { from: np-0-pod0, to: np-0, expect: reachable, protocol: sctp }\n",
        ];
        for yaml in bad {
            let err = resolve(&parse(yaml).expect("valid yaml"), &endpoints());
            assert!(err.is_err(), "{yaml}");
        }
    }
}
