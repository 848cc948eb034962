//! `mock-upstream`: runs one or more mock OpenAI-compatible upstreams (see
//! `switchyard_host_tests::mock`) outside the test process, for the demo and for manual experiments.
//!
//! ```text
//! mock-upstream --listen openai=127.0.0.1:18001 --listen mistral=127.0.0.1:18002
//! mock-upstream --listen openai=127.0.0.1:18001 --no-record --chaos 429=0.10,503=0.02,slow=0.05:300
//! ```
//!
//! Prints one line per listener and serves until killed. Knobs are set per request with `x-mock-*`
//! headers or through each mock's `/_mock/` control endpoints. `--no-record` keeps only counters
//! instead of every request (for long runs); `--chaos SPEC` makes every listener draw faults at
//! random for each request (`switchyard_host_tests::mock::Chaos` describes SPEC).

use std::thread;

use anyhow::{bail, Context};
use switchyard_host_tests::cli::Flags;
use switchyard_host_tests::mock::{Chaos, MockUpstream};

const USAGE: &str = "usage: mock-upstream --listen NAME=HOST:PORT [--listen NAME=HOST:PORT ...] [--no-record] \
                     [--chaos SPEC]\n  SPEC: e.g. 429=0.10,503=0.02,reset-before-headers=0.005,slow=0.05:300,\
                     retry-after-ms=5-50,retry-after-1s=0.01,seed=7";

struct Args {
    listens: Vec<(String, String)>,
    record: bool,
    chaos: Option<Chaos>,
}

fn main() -> anyhow::Result<()> {
    let args = parse_args(std::env::args().skip(1))?;
    let mut mocks = Vec::new();
    for (name, addr) in args.listens {
        let mock = MockUpstream::start_on(&name, addr.as_str()).with_context(|| format!("--listen {name}={addr}"))?;
        mock.set_recording(args.record);
        mock.set_chaos(args.chaos.clone());
        println!("mock-upstream {name} listening on {}", mock.url());
        mocks.push(mock);
    }
    loop {
        thread::park();
    }
}

fn parse_args(args: impl Iterator<Item = String>) -> anyhow::Result<Args> {
    let mut parsed = Args { listens: Vec::new(), record: true, chaos: None };
    let mut flags = Flags::new(args, USAGE);
    while let Some(flag) = flags.next_flag() {
        let mut value = || flags.value(&flag);
        match flag.name.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--no-record" => parsed.record = false,
            "--chaos" => {
                let spec = value()?;
                parsed.chaos = Some(spec.parse().with_context(|| format!("--chaos {spec}"))?);
            }
            "--listen" => {
                let spec = value()?;
                let Some((name, addr)) = spec.split_once('=') else {
                    bail!("`{spec}` is not NAME=HOST:PORT\n{USAGE}");
                };
                if name.is_empty() || addr.is_empty() {
                    bail!("`{spec}` is not NAME=HOST:PORT\n{USAGE}");
                }
                parsed.listens.push((name.to_owned(), addr.to_owned()));
            }
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    if parsed.listens.is_empty() {
        bail!("{USAGE}");
    }
    Ok(parsed)
}
