//! Command-line flags for the project's small binaries: `--flag value`, `--flag=value` and bare
//! switches, read one at a time, with the binary's usage text in every error.

use std::iter::Peekable;

use anyhow::Context;

/// The arguments after the program name, read flag by flag.
pub struct Flags<I: Iterator<Item = String>> {
    args: Peekable<I>,
    usage: &'static str,
}

/// One flag, with its value when it was written `--flag=value`.
pub struct Flag {
    pub name: String,
    inline: Option<String>,
}

impl<I: Iterator<Item = String>> Flags<I> {
    pub fn new(args: I, usage: &'static str) -> Self {
        Flags { args: args.peekable(), usage }
    }

    /// The next flag, or `None` at the end.
    pub fn next_flag(&mut self) -> Option<Flag> {
        let arg = self.args.next()?;
        Some(match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => {
                Flag { name: name.to_owned(), inline: Some(value.to_owned()) }
            }
            _ => Flag { name: arg, inline: None },
        })
    }

    /// The value of `flag`: the text after its `=`, or the next argument.
    pub fn value(&mut self, flag: &Flag) -> anyhow::Result<String> {
        match &flag.inline {
            Some(value) => Ok(value.clone()),
            None => self.args.next().with_context(|| format!("{} needs a value\n{}", flag.name, self.usage)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_come_inline_or_from_the_next_argument() {
        let args = ["--a=1", "--b", "2", "--switch", "--c"].map(String::from);
        let mut flags = Flags::new(args.into_iter(), "usage: x");
        let a = flags.next_flag().unwrap();
        assert_eq!((a.name.as_str(), flags.value(&a).unwrap().as_str()), ("--a", "1"));
        let b = flags.next_flag().unwrap();
        assert_eq!((b.name.as_str(), flags.value(&b).unwrap().as_str()), ("--b", "2"));
        assert_eq!(flags.next_flag().unwrap().name, "--switch");
        let c = flags.next_flag().unwrap();
        let err = flags.value(&c).unwrap_err().to_string();
        assert!(err.contains("--c needs a value") && err.contains("usage: x"), "{err}");
        assert!(flags.next_flag().is_none());
    }
}
