//! Configurations as files: `testdata/fixtures/NAME.toml`, with placeholders.
//!
//! A fixture names its placeholders in a comment line of its own,
//! `# placeholders: {upstream} {jwks_url}`; [`Fixture::var`] fills one, and
//! [`Fixture::config`] refuses to load while one is left. `{keys}` (the test keys) and
//! `{testdata}` are filled in on loading, so a fixture never depends on where it is parsed
//! or written. Other braces (route templates such as `/docs/{id}`) are left alone.
//!
//! A test that needs a small variation of a shared fixture says so with
//! [`Fixture::append`] (more tables) or [`Fixture::replace`] (one changed line).

use std::fmt::Display;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use warden_core::Config;

use crate::{keys_dir, testdata};

/// A configuration template being filled in.
#[derive(Debug, Clone)]
pub struct Fixture {
    path: PathBuf,
    text: String,
    placeholders: Vec<String>,
}

/// The fixture `testdata/fixtures/NAME.toml`.
pub fn fixture(name: &str) -> Fixture {
    Fixture::load(testdata().join("fixtures").join(format!("{name}.toml")))
}

impl Fixture {
    /// A configuration template anywhere (for example `testdata/bypass/warden.toml`); it is
    /// parsed with its own path, so relative file names in it are read beside it.
    pub fn load(path: impl AsRef<Path>) -> Self {
        let path = path.as_ref().to_path_buf();
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()));
        let placeholders = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("# placeholders:"))
            .flat_map(str::split_whitespace)
            .map(|p| {
                p.trim_matches(|c| c == '{' || c == '}' || c == ',')
                    .to_owned()
            })
            .filter(|p| !p.is_empty())
            .collect();
        let text = builtin(&text);
        Self {
            path,
            text,
            placeholders,
        }
    }

    /// Fill every `{name}` with `value`. The fixture must have the placeholder.
    pub fn var(mut self, name: &str, value: impl Display) -> Self {
        let placeholder = format!("{{{name}}}");
        assert!(
            self.text.contains(&placeholder),
            "fixture {} has no {placeholder}",
            self.path.display()
        );
        self.text = self.text.replace(&placeholder, &value.to_string());
        self
    }

    /// Fill `{upstream}` with the upstream's `host:port`.
    pub fn upstream(self, addr: SocketAddr) -> Self {
        self.var("upstream", addr)
    }

    /// Add TOML at the end (more tables, or array-of-tables entries such as `[[routes]]`);
    /// `{keys}` and `{testdata}` are filled in it too.
    pub fn append(mut self, toml: &str) -> Self {
        if !self.text.ends_with('\n') {
            self.text.push('\n');
        }
        self.text.push_str(&builtin(toml));
        self
    }

    /// Replace the one occurrence of `from` (which must be there) with `to`, in which
    /// `{keys}` and `{testdata}` are filled.
    pub fn replace(mut self, from: &str, to: &str) -> Self {
        let found = self.text.matches(from).count();
        assert_eq!(
            found,
            1,
            "fixture {}: `{from}` occurs {found} times, not once",
            self.path.display()
        );
        self.text = self.text.replacen(from, &builtin(to), 1);
        self
    }

    /// The file the fixture came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The text as it is now.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The text with every placeholder filled.
    pub fn filled(&self) -> &str {
        let unfilled: Vec<&str> = self
            .placeholders
            .iter()
            .map(String::as_str)
            .filter(|p| self.text.contains(&format!("{{{p}}}")))
            .collect();
        assert!(
            unfilled.is_empty(),
            "fixture {}: fill {unfilled:?} first",
            self.path.display()
        );
        &self.text
    }

    /// The checked configuration; errors name the fixture's file, line and field.
    pub fn config(&self) -> Config {
        Config::parse(self.filled(), &self.path).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Write the filled text to `dir` under the fixture's file name, for a test that runs
    /// the binary with `--config PATH`; returns the path.
    pub fn write_to(&self, dir: &Path) -> PathBuf {
        let name = self
            .path
            .file_name()
            .unwrap_or_else(|| "warden.toml".as_ref());
        let path = dir.join(name);
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        std::fs::write(&path, self.filled()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        path
    }
}

/// `{keys}` and `{testdata}` filled in.
fn builtin(text: &str) -> String {
    text.replace("{keys}", &keys_dir().display().to_string())
        .replace("{testdata}", &testdata().display().to_string())
}
