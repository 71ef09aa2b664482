//! A tiny hand-rolled option parser: `--flag`, `--key VALUE` and `--key=VALUE`.
//!
//! Each command takes the options it knows and then calls [`Args::finish`], so a typo is an
//! error instead of being silently ignored.

use anyhow::{bail, Context, Result};
use std::str::FromStr;

pub struct Args {
    rest: Vec<String>,
}

impl Args {
    pub fn new(args: impl IntoIterator<Item = String>) -> Self {
        Self {
            rest: args.into_iter().collect(),
        }
    }

    /// Removes `--name` and reports whether it was present.
    pub fn flag(&mut self, name: &str) -> bool {
        let before = self.rest.len();
        self.rest.retain(|a| a != name);
        self.rest.len() != before
    }

    /// Removes `--name VALUE` (or `--name=VALUE`) and returns the last value given.
    pub fn value(&mut self, name: &str) -> Result<Option<String>> {
        let prefix = format!("{name}=");
        let mut found = None;
        let mut i = 0;
        while i < self.rest.len() {
            if self.rest[i] == name {
                if i + 1 >= self.rest.len() {
                    bail!("{name} needs a value");
                }
                found = Some(self.rest.remove(i + 1));
                self.rest.remove(i);
            } else if let Some(v) = self.rest[i].strip_prefix(&prefix) {
                found = Some(v.to_owned());
                self.rest.remove(i);
            } else {
                i += 1;
            }
        }
        Ok(found)
    }

    /// Like [`Args::value`], parsed into `T`, with a message naming the option.
    pub fn parsed<T: FromStr>(&mut self, name: &str) -> Result<Option<T>>
    where
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        self.value(name)?
            .map(|v| v.parse().with_context(|| format!("{name}: invalid value {v:?}")))
            .transpose()
    }

    /// Removes and returns the first argument that is not an option.
    pub fn positional(&mut self) -> Option<String> {
        let i = self.rest.iter().position(|a| !a.starts_with("--"))?;
        Some(self.rest.remove(i))
    }

    /// Errors on anything left over.
    pub fn finish(self) -> Result<()> {
        match self.rest.first() {
            None => Ok(()),
            Some(a) => bail!("unexpected argument {a:?} (see `cargo xtask help`)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Args {
        Args::new(s.iter().map(|s| s.to_string()))
    }

    #[test]
    fn flags_and_values_in_both_forms() {
        let mut a = args(&["--gdb", "--smp", "2", "--mem=2G"]);
        assert!(a.flag("--gdb"));
        assert_eq!(a.parsed::<u32>("--smp").unwrap(), Some(2));
        assert_eq!(a.value("--mem").unwrap().as_deref(), Some("2G"));
        assert!(a.finish().is_ok());
    }

    #[test]
    fn missing_value_and_leftovers_are_errors() {
        assert!(args(&["--smp"]).value("--smp").is_err());
        assert!(args(&["--smp", "x"]).parsed::<u32>("--smp").is_err());
        assert!(args(&["--bogus"]).finish().is_err());
    }
}
