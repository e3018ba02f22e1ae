//! What a live change (`aksnet services`, `aksnet policy`) did to the datapath of a
//! running cluster.

use std::fmt;
use std::time::Duration;

/// How a change reached the datapath: on how many nodes, what programming meant there
/// (map updates, or the rules restored per node) and how long it took, planning not
/// counted.
#[derive(Debug)]
pub struct Programmed {
    pub nodes: usize,
    pub how: String,
    pub took: Duration,
}

impl fmt::Display for Programmed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "programmed on {} nodes in {:.3} ms ({})",
            self.nodes,
            self.took.as_secs_f64() * 1000.0,
            self.how
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_where_what_and_how_long() {
        let programmed = Programmed {
            nodes: 2,
            how: "BPF map updates on each node".to_owned(),
            took: Duration::from_micros(1250),
        };
        assert_eq!(
            programmed.to_string(),
            "programmed on 2 nodes in 1.250 ms (BPF map updates on each node)"
        );
    }
}
