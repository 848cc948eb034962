//! `mock-upstream`: runs one or more mock OpenAI-compatible upstreams (see
//! `switchyard_host_tests::mock`) outside the test process, for the demo and for manual experiments.
//!
//! ```text
//! mock-upstream --listen openai=127.0.0.1:18001 --listen mistral=127.0.0.1:18002
//! ```
//!
//! Prints one line per listener and serves until killed. Knobs are set per request with `x-mock-*`
//! headers or through each mock's `/_mock/` control endpoints.

use std::thread;

use anyhow::{bail, Context};
use switchyard_host_tests::mock::MockUpstream;

const USAGE: &str = "usage: mock-upstream --listen NAME=HOST:PORT [--listen NAME=HOST:PORT ...]";

fn main() -> anyhow::Result<()> {
    let listens = parse_args(std::env::args().skip(1))?;
    let mut mocks = Vec::new();
    for (name, addr) in listens {
        let mock = MockUpstream::start_on(&name, addr.as_str()).with_context(|| format!("--listen {name}={addr}"))?;
        println!("mock-upstream {name} listening on {}", mock.url());
        mocks.push(mock);
    }
    loop {
        thread::park();
    }
}

fn parse_args(args: impl Iterator<Item = String>) -> anyhow::Result<Vec<(String, String)>> {
    let mut listens = Vec::new();
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let spec = match arg.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--listen" => args.next().context(USAGE)?,
            other => match other.strip_prefix("--listen=") {
                Some(spec) => spec.to_owned(),
                None => bail!("unknown argument `{other}`\n{USAGE}"),
            },
        };
        let Some((name, addr)) = spec.split_once('=') else {
            bail!("`{spec}` is not NAME=HOST:PORT\n{USAGE}");
        };
        if name.is_empty() || addr.is_empty() {
            bail!("`{spec}` is not NAME=HOST:PORT\n{USAGE}");
        }
        listens.push((name.to_owned(), addr.to_owned()));
    }
    if listens.is_empty() {
        bail!("{USAGE}");
    }
    Ok(listens)
}
