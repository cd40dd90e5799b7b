//! Alert mail. Mails are queued to one sender thread, so a request or a job
//! never waits on SMTP; a slow or dead SMTP server costs a log line. Without
//! `CREDITGATE_SMTP_URL` (or without recipients) mails are logged instead.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lettre::message::{header::ContentType, Mailbox};
use lettre::{Message, SmtpTransport, Transport};

use crate::config::Config;

/// Per SMTP connect, read and write; lettre's own default is 60 s.
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(10);

struct Mail {
    subject: String,
    body: String,
    /// Also to this address (a user's own notice), besides the alert list.
    also_to: Option<String>,
    /// Reported back once the mail is sent or has failed.
    done: Option<Sender<()>>,
}

enum Outbox {
    Smtp {
        transport: Box<SmtpTransport>,
        from: Mailbox,
        to: Vec<Mailbox>,
    },
    Log(&'static str),
}

#[derive(Clone)]
pub struct Mailer {
    queue: Arc<Mutex<Option<Sender<Mail>>>>,
    worker: Arc<Mutex<Option<JoinHandle<()>>>>,
    prefix: String,
}

impl Mailer {
    /// Starts the sender thread. A bad SMTP URL or address is refused here,
    /// at start, with the variable's name.
    pub fn start(config: &Config) -> Result<Mailer, String> {
        let outbox = match (
            &config.smtp_url,
            &config.mail_from,
            config.alert_to.is_empty(),
        ) {
            (None, _, _) => Outbox::Log("CREDITGATE_SMTP_URL is not set"),
            (Some(_), None, _) => Outbox::Log("CREDITGATE_MAIL_FROM is not set"),
            (Some(_), _, true) => Outbox::Log("CREDITGATE_ALERT_TO is not set"),
            (Some(url), Some(from), false) => {
                let transport = SmtpTransport::from_url(url.expose())
                    .map_err(|e| format!("CREDITGATE_SMTP_URL: {e}"))?
                    .timeout(Some(SMTP_TIMEOUT))
                    .build();
                let from: Mailbox = from
                    .parse()
                    .map_err(|e| format!("CREDITGATE_MAIL_FROM: {e}"))?;
                let to = config
                    .alert_to
                    .iter()
                    .map(|a| {
                        a.parse::<Mailbox>()
                            .map_err(|e| format!("CREDITGATE_ALERT_TO: {a}: {e}"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Outbox::Smtp {
                    transport: Box::new(transport),
                    from,
                    to,
                }
            }
        };
        let (tx, rx) = mpsc::channel();
        let worker = std::thread::Builder::new()
            .name("mail".into())
            .spawn(move || deliver_all(outbox, rx))
            .map_err(|e| format!("cannot start the mail thread: {e}"))?;
        Ok(Mailer {
            queue: Arc::new(Mutex::new(Some(tx))),
            worker: Arc::new(Mutex::new(Some(worker))),
            prefix: config.mail_prefix.clone(),
        })
    }

    /// Queues a mail and returns at once.
    pub fn send(&self, subject: &str, body: &str) {
        self.enqueue(subject, body, None, None);
    }

    /// Like `send`, to `also_to` as well as to the alert list.
    pub fn send_also_to(&self, also_to: Option<&str>, subject: &str, body: &str) {
        self.enqueue(subject, body, also_to.map(str::to_string), None);
    }

    /// Queues a mail and waits until it is sent or failed, at most `limit`.
    /// Returns whether it was handled in time.
    pub fn send_and_wait(&self, subject: &str, body: &str, limit: Duration) -> bool {
        let (tx, rx) = mpsc::channel();
        self.enqueue(subject, body, None, Some(tx));
        rx.recv_timeout(limit).is_ok()
    }

    fn enqueue(
        &self,
        subject: &str,
        body: &str,
        also_to: Option<String>,
        done: Option<Sender<()>>,
    ) {
        let mail = Mail {
            subject: format!("{}{subject}", self.prefix),
            body: body.to_string(),
            also_to,
            done,
        };
        let queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        match queue.as_ref() {
            Some(q) => {
                let _ = q.send(mail);
            }
            None => log::warn!("mail not sent, the mailer is stopped: {}", mail.subject),
        }
    }

    /// Closes the queue and waits for what is queued, at most `limit`.
    pub fn stop(&self, limit: Duration) {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(worker) = self.worker.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let deadline = Instant::now() + limit;
        while !worker.is_finished() {
            if Instant::now() >= deadline {
                log::warn!("mail still being sent after {limit:?}; not waiting longer");
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = worker.join();
    }
}

fn deliver_all(outbox: Outbox, rx: Receiver<Mail>) {
    for mail in rx {
        match &outbox {
            Outbox::Log(why) => {
                log::info!(
                    "mail not sent ({why}): {} -- {}",
                    mail.subject,
                    mail.body.replace('\n', " | ")
                )
            }
            Outbox::Smtp {
                transport,
                from,
                to,
            } => {
                let mut builder = Message::builder()
                    .from(from.clone())
                    .subject(mail.subject.clone());
                for r in to {
                    builder = builder.to(r.clone());
                }
                // Addresses were checked when stored (model::Email).
                if let Some(extra) = mail
                    .also_to
                    .as_deref()
                    .and_then(|a| a.parse::<Mailbox>().ok())
                {
                    if !to.contains(&extra) {
                        builder = builder.to(extra);
                    }
                }
                let sent = builder
                    .header(ContentType::TEXT_PLAIN)
                    .body(mail.body.clone())
                    .map_err(|e| e.to_string())
                    .and_then(|m| transport.send(&m).map(|_| ()).map_err(|e| e.to_string()));
                match sent {
                    Ok(()) => log::info!("mail sent: {}", mail.subject),
                    Err(e) => log::error!("mail failed: {}: {e}", mail.subject),
                }
            }
        }
        if let Some(done) = mail.done {
            let _ = done.send(());
        }
    }
}
