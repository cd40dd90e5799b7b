//! What every layer shares about errors: how to say one with its causes on
//! one line, for logs, mails and the CLI's exit message. Each layer keeps
//! its own error type; this only prints them.

/// `error: cause: cause` on one line; a cause whose text its parent already
/// ends with is not repeated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);

    impl fmt::Display for E {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn causes_follow_on_one_line_without_repeats() {
        let e = E(
            "outer",
            Some(Box::new(E("inner", Some(Box::new(E("inner", None)))))),
        );
        assert_eq!(error_chain(&e), "outer: inner");
    }
}
