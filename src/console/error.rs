//! Every way a console request can fail, mapped to its status and the
//! message the operator reads in ONE place. Domain errors arrive through
//! the `From` impls and keep their own words; database failures are an
//! opaque "try again" on the page and their cause goes to the log.

use std::fmt;

use crate::db::DbError;
use crate::gateway::store::RouteError;
use crate::model::ParseError;
use crate::users::keys::KeyError;
use crate::users::UserError;
use crate::webhooks::WebhookError;

#[derive(Debug)]
pub enum ConsoleError {
    /// A form field or a path segment that does not parse.
    BadInput(String),
    /// A POST without the session's CSRF token.
    Csrf,
    NotFound(String),
    /// The change would clash with what exists (a second route, …).
    Conflict(String),
    /// The login brake: too many failed tokens from this address.
    Throttled {
        retry_after: u64,
    },
    Db(DbError),
}

impl ConsoleError {
    pub fn status(&self) -> u16 {
        match self {
            ConsoleError::BadInput(_) => 400,
            ConsoleError::Csrf => 403,
            ConsoleError::NotFound(_) => 404,
            ConsoleError::Conflict(_) => 409,
            ConsoleError::Throttled { .. } => 429,
            ConsoleError::Db(_) => 503,
        }
    }
}

impl fmt::Display for ConsoleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConsoleError::BadInput(m) | ConsoleError::NotFound(m) | ConsoleError::Conflict(m) => {
                f.write_str(m)
            }
            ConsoleError::Csrf => f.write_str(
                "this form is out of date or did not come from the console; \
                 nothing was changed — reload the page and try again",
            ),
            ConsoleError::Throttled { retry_after } => write!(
                f,
                "too many failed logins from this address; try again in {retry_after} s"
            ),
            ConsoleError::Db(_) => {
                f.write_str("the database is unavailable; nothing was changed — try again shortly")
            }
        }
    }
}

impl std::error::Error for ConsoleError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConsoleError::Db(e) => Some(e),
            _ => None,
        }
    }
}

impl From<DbError> for ConsoleError {
    fn from(e: DbError) -> Self {
        ConsoleError::Db(e)
    }
}

impl From<ParseError> for ConsoleError {
    fn from(e: ParseError) -> Self {
        ConsoleError::BadInput(e.to_string())
    }
}

impl From<UserError> for ConsoleError {
    fn from(e: UserError) -> Self {
        match e {
            UserError::Db(e) => ConsoleError::Db(e),
            UserError::Unknown(_) => ConsoleError::NotFound(e.to_string()),
            UserError::Exists(_) => ConsoleError::Conflict(e.to_string()),
            UserError::InvalidCredit(_) => ConsoleError::BadInput(e.to_string()),
        }
    }
}

impl From<KeyError> for ConsoleError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Db(e) => ConsoleError::Db(e),
            KeyError::UnknownUser(_) | KeyError::UnknownKey(_) => {
                ConsoleError::NotFound(e.to_string())
            }
            KeyError::TooMany => ConsoleError::BadInput(e.to_string()),
        }
    }
}

impl From<WebhookError> for ConsoleError {
    fn from(e: WebhookError) -> Self {
        match e {
            WebhookError::Db(e) => ConsoleError::Db(e),
            WebhookError::Unknown(_) => ConsoleError::NotFound(e.to_string()),
            WebhookError::Invalid(_) => ConsoleError::BadInput(e.to_string()),
        }
    }
}

impl From<RouteError> for ConsoleError {
    fn from(e: RouteError) -> Self {
        match e {
            RouteError::Db(e) => ConsoleError::Db(e),
            RouteError::Invalid(_) => ConsoleError::BadInput(e.to_string()),
            RouteError::Exists(_) => ConsoleError::Conflict(e.to_string()),
            RouteError::Unknown(_) => ConsoleError::NotFound(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_errors_keep_their_words_and_get_their_status() {
        let e = ConsoleError::from(UserError::InvalidCredit("credit would be -5".into()));
        assert_eq!(e.status(), 400);
        assert_eq!(e.to_string(), "credit would be -5");
        assert_eq!(
            ConsoleError::from(UserError::Unknown("bob".into())).status(),
            404
        );
        assert_eq!(
            ConsoleError::from(RouteError::Exists("/w".into())).status(),
            409
        );
    }

    #[test]
    fn database_failures_do_not_leak_their_cause() {
        let e = ConsoleError::from(DbError::MigrationLocked);
        assert_eq!(e.status(), 503);
        assert!(!e.to_string().contains("lock"));
    }
}
