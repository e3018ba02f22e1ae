//! `aksnet`: emulate AKS networking in network namespaces and compare datapaths.

use clap::{Parser, Subcommand};

/// Emulate Azure Kubernetes Service networking (Azure CNI and kubenet, on an eBPF or an
/// iptables datapath) inside network namespaces on this machine.
#[derive(Parser)]
#[command(name = "aksnet", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.command.is_none() {
        use clap::CommandFactory;
        Cli::command().print_help()?;
    }
    Ok(())
}
