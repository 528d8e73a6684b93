//! Configuration errors that name the file, the line and the field.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The dotted field name (`routes[2].upstream`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.field,
            self.message
        )
    }
}

impl std::error::Error for ConfigError {}

/// For tools that report through `miette`: each problem is a diagnostic with a stable code,
/// its position already in the message (file:line:column, then the field).
impl miette::Diagnostic for ConfigError {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new("warden::config"))
    }
}

/// Every problem of a file, as one diagnostic with each problem related to it.
impl miette::Diagnostic for ConfigErrors {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new("warden::config"))
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn miette::Diagnostic> + 'a>> {
        Some(Box::new(
            self.0.iter().map(|e| e as &dyn miette::Diagnostic),
        ))
    }
}

/// Every problem found in a configuration; never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Collects errors while checking one file.
#[derive(Debug)]
pub(crate) struct Collector<'a> {
    file: &'a Path,
    text: &'a str,
    pub errors: Vec<ConfigError>,
}

impl<'a> Collector<'a> {
    pub fn new(file: &'a Path, text: &'a str) -> Self {
        Self {
            file,
            text,
            errors: Vec::new(),
        }
    }

    /// Record a problem at a byte span of the file.
    pub fn at(&mut self, span: Range<usize>, field: impl Into<String>, message: impl Into<String>) {
        let (line, column) = line_column(self.text, span.start);
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            column,
            field: field.into(),
            message: message.into(),
        });
    }

    /// Record a problem in another file (a policy, schema or entities file), at a byte
    /// offset of that file's text.
    pub fn in_file(
        &mut self,
        file: &Path,
        text: &str,
        offset: usize,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        let (line, column) = line_column(text, offset);
        self.errors.push(ConfigError {
            file: file.to_path_buf(),
            line,
            column,
            field: field.into(),
            message: message.into(),
        });
    }

    pub fn finish<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(ConfigErrors(self.errors))
        }
    }
}

/// 1-based line and column of a byte offset.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_lines_and_columns() {
        let text = "a = 1\nbb = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        assert_eq!(line_column(text, 11), (2, 6));
        assert_eq!(line_column(text, 999), (3, 1));
    }
}

#[cfg(test)]
mod diagnostic_tests {
    use miette::Diagnostic;

    use super::*;

    #[test]
    fn configuration_errors_are_diagnostics_naming_each_problem() {
        let one = |line| ConfigError {
            file: PathBuf::from("warden.toml"),
            line,
            column: 3,
            field: "routes[0].upstream".to_owned(),
            message: "no upstream named `x`".to_owned(),
        };
        let errors = ConfigErrors(vec![one(4), one(9)]);
        assert_eq!(errors.code().unwrap().to_string(), "warden::config");
        let related: Vec<String> = errors.related().unwrap().map(|d| d.to_string()).collect();
        assert_eq!(
            related,
            [
                "warden.toml:4:3: routes[0].upstream: no upstream named `x`",
                "warden.toml:9:3: routes[0].upstream: no upstream named `x`"
            ]
        );
    }
}
