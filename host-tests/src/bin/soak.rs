//! `soak`: the soak test (`make soak`). Runs Envoy with switchyard and failover
//! (`envoy/soak/envoy.yaml`) in front of three mock providers that inject faults, sends a million
//! mixed requests, and writes a markdown report (see `switchyard_host_tests::soak`).
//!
//! ```text
//! soak [--requests N] [--seconds S] [--concurrency C] [--warmup N] [--timeout-secs S] [--cut-rate P]
//!      [--chaos SPEC] [--seed N] [--envoy-workers N] [--sample-secs S] [--report PATH] [--quick]
//! ```
//!
//! Exits 1 when any request was lost, hung or wrong, or Envoy did not survive.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use switchyard_host_tests::cli::Flags;
use switchyard_host_tests::soak::{self, SoakOptions, DEFAULT_CHAOS};

const USAGE: &str = "usage: soak [--requests N] [--seconds S] [--concurrency C] [--warmup N] [--timeout-secs S] \
[--cut-rate P] [--chaos SPEC] [--seed N] [--envoy-workers N] [--sample-secs S] [--report PATH] [--quick]

  --requests N       requests after the warm-up (default 1000000)
  --seconds S        stop sending after S seconds even if fewer were sent
  --concurrency C    client threads, one keep-alive connection each (default 64)
  --warmup N         requests sent before measuring (default 5000)
  --timeout-secs S   a request taking longer counts as hung (default 90)
  --cut-rate P       share of requests that ask for a reset mid-answer (default 0.01)
  --chaos SPEC       the providers' faults per attempt (default below)
  --seed N           seed of the request mix and of the faults (default 1)
  --envoy-workers N  Envoy --concurrency (default 2)
  --sample-secs S    memory and progress sampling period (default 30)
  --report PATH      write the markdown report there (default: print it)
  --quick            20000 requests, 1000 warm-up, samples every 5 s (options after it still apply)";

fn main() -> anyhow::Result<()> {
    let (options, report) = parse_args(std::env::args().skip(1))?;
    let result = soak::run(&options)?;
    let markdown = result.markdown();
    match &report {
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            }
            fs::write(path, &markdown).with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("soak: report written to {}", path.display());
        }
        None => println!("{markdown}"),
    }
    for example in result.examples() {
        eprintln!("soak: {example}");
    }
    eprintln!("{}", result.summary());
    if !result.passed() {
        std::process::exit(1);
    }
    Ok(())
}

fn parse_args(args: impl Iterator<Item = String>) -> anyhow::Result<(SoakOptions, Option<PathBuf>)> {
    let mut options = SoakOptions::default();
    let mut report = None;
    let mut flags = Flags::new(args, USAGE);
    while let Some(flag) = flags.next_flag() {
        let mut value = || flags.value(&flag);
        fn number<T: std::str::FromStr>(flag: &str, text: &str) -> anyhow::Result<T> {
            text.parse().map_err(|_| anyhow::anyhow!("{flag}: `{text}` is not a valid number"))
        }
        match flag.name.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}\n\n  default chaos: {DEFAULT_CHAOS}");
                std::process::exit(0);
            }
            "--quick" => {
                options.requests = 20_000;
                options.warmup = 1_000;
                options.sample_every = Duration::from_secs(5);
            }
            "--requests" => options.requests = number(&flag.name, &value()?)?,
            "--seconds" => options.max_duration = Some(Duration::from_secs(number(&flag.name, &value()?)?)),
            "--concurrency" => options.concurrency = number(&flag.name, &value()?)?,
            "--warmup" => options.warmup = number(&flag.name, &value()?)?,
            "--timeout-secs" => options.timeout = Duration::from_secs(number(&flag.name, &value()?)?),
            "--cut-rate" => {
                let rate: f64 = number(&flag.name, &value()?)?;
                if !(0.0..=1.0).contains(&rate) {
                    bail!("--cut-rate is a share between 0 and 1");
                }
                options.cut_rate = rate;
            }
            "--chaos" => {
                let spec = value()?;
                options.chaos = spec.parse().with_context(|| format!("--chaos {spec}"))?;
                options.chaos_spec = spec;
            }
            "--seed" => options.seed = number(&flag.name, &value()?)?,
            "--envoy-workers" => options.envoy_workers = number(&flag.name, &value()?)?,
            "--sample-secs" => options.sample_every = Duration::from_secs(number(&flag.name, &value()?)?),
            "--report" => report = Some(PathBuf::from(value()?)),
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    if options.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    Ok((options, report))
}
