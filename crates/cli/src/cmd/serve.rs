//! `ftbudget serve`: the page and the JSON API of crates/server on one address, until the process
//! is stopped (Ctrl-C). The answers are those of `estimate` and `fit`, from the same functions.

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on (host:port; port 0 picks a free port). The default is reachable from
    /// this machine only; 0.0.0.0:PORT shares it with the network
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,
}

pub fn run(args: ServeArgs) -> Result<()> {
    ftbudget_server::run(&args.addr, |bound| {
        eprintln!("ftbudget serve: http://{bound}/ (Ctrl-C stops)");
    })?;
    Ok(())
}
