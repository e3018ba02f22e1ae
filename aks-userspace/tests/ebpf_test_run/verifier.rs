//! The verifier's work on each program stays far below its limit of one million
//! instructions: a change that makes it explode (a path per header length, a string
//! copied on every drop path) fails here, not on a kernel with a lower limit.

use aks_ebpf_common::Program;
use aks_userspace::fabric::forwarder::FabricProgram;

use crate::harness::Harness;

/// Instructions the verifier may process per program: a tenth of its limit. Measured
/// at the time of writing, as loaded here (debug logs off): from_pod 9,601, from_vnet
/// 9,986 (and the retired nsg XDP program 15,147); with every log level on: 13,938 and
/// 22,234.
const BUDGET: u32 = 100_000;

#[test]
fn every_program_verifies_within_its_budget() {
    let h = Harness::new();
    for program in Program::ALL {
        let info = match program {
            Program::Fabric => FabricProgram::load(64)
                .expect("loading the fabric program")
                .classifier()
                .expect("fabric")
                .info(),
            _ => h
                .datapath
                .classifier(program.name())
                .expect("classifier")
                .info(),
        }
        .expect("program info");
        let verified = info
            .verified_instruction_count()
            .expect("the kernel reports verified instructions");
        eprintln!("{}: {verified} instructions verified", program.name());
        assert!(
            verified < BUDGET,
            "{}: {verified} instructions verified, budget {BUDGET}",
            program.name()
        );
    }
}
