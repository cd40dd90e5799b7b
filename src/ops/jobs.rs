//! Named background jobs on one clokwerk thread: each has a schedule, can be
//! paused, resumed and run now, and remembers its last run and result. A job
//! that fails or panics is logged and counted; the scheduler keeps going.
//! A job may also carry a tick hook, run on every scheduler tick whether the
//! job is paused or not, for what must prove the scheduler itself is alive
//! (the systemd watchdog).

use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use clokwerk::{ScheduleHandle, Scheduler, TimeUnits};
use serde::Serialize;

use crate::db::DbError;
use crate::error::error_chain;
use crate::ops::metrics::Metrics;

/// A job's work: a line for the jobs table, or why it failed.
pub type JobFn = Box<dyn Fn() -> Result<String, JobError> + Send + Sync>;

/// Why a job's run failed: what it was doing, and the database's error
/// (every job's work is the database's).
#[derive(Debug)]
pub struct JobError {
    pub doing: &'static str,
    pub cause: DbError,
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.doing, error_chain(&self.cause))
    }
}

impl std::error::Error for JobError {}

impl JobError {
    /// `doing` failed because of `cause`, for `map_err`.
    pub fn doing(doing: &'static str) -> impl Fn(DbError) -> JobError {
        move |cause| JobError { doing, cause }
    }
}
/// Run on each scheduler tick; see `Jobs::on_tick`.
pub type TickFn = Box<dyn Fn() + Send + Sync>;

pub struct Job {
    id: &'static str,
    every: Duration,
    work: JobFn,
    state: Mutex<JobState>,
    /// Serialises runs of one job: the scheduler and "run now" never overlap.
    running: Mutex<()>,
    on_tick: OnceLock<TickFn>,
}

#[derive(Default)]
struct JobState {
    paused: bool,
    last_run: Option<DateTime<Utc>>,
    last_result: Option<String>,
    next_run: Option<DateTime<Utc>>,
}

/// A job as listed by the admin API and the CLI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobView {
    pub id: String,
    pub schedule: String,
    pub paused: bool,
    pub last_run: Option<String>,
    pub last_result: Option<String>,
    pub next_run: Option<String>,
}

impl Job {
    pub fn new(id: &'static str, every: Duration, work: JobFn) -> Job {
        Job {
            id,
            every,
            work,
            state: Mutex::new(JobState::default()),
            running: Mutex::new(()),
            on_tick: OnceLock::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, JobState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn view(&self) -> JobView {
        let s = self.state();
        let time =
            |t: Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true));
        JobView {
            id: self.id.to_string(),
            schedule: format!("every {}s", self.every.as_secs()),
            paused: s.paused,
            last_run: time(s.last_run),
            last_result: s.last_result.clone(),
            next_run: if s.paused { None } else { time(s.next_run) },
        }
    }

    /// Runs the work now, whatever the paused flag says.
    fn run(&self, metrics: &Metrics) {
        let _one_at_a_time = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let started = Utc::now();
        let (result, label) = match panic::catch_unwind(AssertUnwindSafe(|| (self.work)())) {
            Ok(Ok(msg)) => (format!("ok: {msg}"), "ok"),
            Ok(Err(msg)) => {
                log::error!("job {} failed: {msg}", self.id);
                (format!("error: {msg}"), "error")
            }
            Err(_) => {
                log::error!("job {} panicked (see the panic message above)", self.id);
                ("error: panicked".to_string(), "panic")
            }
        };
        metrics.job_run(self.id, label);
        let mut s = self.state();
        s.last_run = Some(started);
        s.last_result = Some(result);
    }
}

pub struct Jobs {
    jobs: Vec<Job>,
    metrics: Arc<Metrics>,
}

impl Jobs {
    pub fn new(jobs: Vec<Job>, metrics: Arc<Metrics>) -> Jobs {
        Jobs { jobs, metrics }
    }

    fn find(&self, id: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.id == id)
    }

    pub fn list(&self) -> Vec<JobView> {
        self.jobs.iter().map(Job::view).collect()
    }

    pub fn pause(&self, id: &str) -> Option<JobView> {
        let job = self.find(id)?;
        job.state().paused = true;
        log::info!("job {id} paused");
        Some(job.view())
    }

    pub fn resume(&self, id: &str) -> Option<JobView> {
        let job = self.find(id)?;
        job.state().paused = false;
        log::info!("job {id} resumed");
        Some(job.view())
    }

    /// Runs a job in the caller's thread and returns it with its result.
    pub fn run_now(&self, id: &str) -> Option<JobView> {
        let job = self.find(id)?;
        job.run(&self.metrics);
        Some(job.view())
    }

    /// Sets the hook the scheduler runs on every tick of job `id`, paused
    /// or not, before the job's work; "run now" does not run it, so it
    /// proves that the scheduler thread is alive. False if there is no such
    /// job or it already has a hook.
    pub fn on_tick(&self, id: &str, hook: TickFn) -> bool {
        self.find(id)
            .is_some_and(|job| job.on_tick.set(hook).is_ok())
    }

    /// What the scheduler calls on each tick of a job.
    fn tick(&self, id: &str) {
        let Some(job) = self.find(id) else { return };
        if let Some(hook) = job.on_tick.get() {
            // A panic here would end the scheduler thread with every job.
            if panic::catch_unwind(AssertUnwindSafe(hook)).is_err() {
                log::error!("tick hook of job {id} panicked (see the panic message above)");
            }
        }
        let now = Utc::now();
        let paused = job.state().paused;
        if !paused {
            job.run(&self.metrics);
        }
        job.state().next_run = Some(next_tick(now, job.every));
    }

    /// Starts the scheduler thread; dropping (or `stop`ping) the handle stops
    /// and joins it.
    pub fn start(self: &Arc<Self>) -> ScheduleHandle {
        let mut scheduler = Scheduler::with_tz(Utc);
        for job in &self.jobs {
            job.state().next_run = Some(next_tick(Utc::now(), job.every));
            let jobs = Arc::clone(self);
            let id = job.id;
            let secs = job.every.as_secs().max(1) as u32;
            scheduler.every(secs.seconds()).run(move || jobs.tick(id));
        }
        scheduler.watch_thread(Duration::from_millis(200))
    }
}

/// When clokwerk next fires an `every(n.seconds())` job after `now`: at the
/// next multiple of n seconds since the epoch, not n seconds after `now`
/// (its `Interval::Seconds`), so `next_run` shows the real moment.
fn next_tick(now: DateTime<Utc>, every: Duration) -> DateTime<Utc> {
    let n = every.as_secs().max(1) as i64;
    let t = now.timestamp();
    DateTime::from_timestamp(t - t.rem_euclid(n) + n, 0).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn counting(counter: Arc<AtomicU32>) -> JobFn {
        Box::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok("counted".into())
        })
    }

    #[test]
    fn run_now_records_the_result() {
        let n = Arc::new(AtomicU32::new(0));
        let jobs = Jobs::new(
            vec![Job::new(
                "count",
                Duration::from_secs(60),
                counting(n.clone()),
            )],
            Default::default(),
        );
        let view = jobs.run_now("count").unwrap();
        assert_eq!(n.load(Ordering::SeqCst), 1);
        assert_eq!(view.last_result.as_deref(), Some("ok: counted"));
        assert!(view.last_run.is_some());
        assert!(jobs.run_now("nope").is_none());
    }

    #[test]
    fn a_paused_job_is_skipped_by_the_scheduler_and_resumes() {
        let n = Arc::new(AtomicU32::new(0));
        let jobs = Jobs::new(
            vec![Job::new(
                "count",
                Duration::from_secs(1),
                counting(n.clone()),
            )],
            Default::default(),
        );
        assert!(jobs.pause("count").unwrap().paused);
        jobs.tick("count");
        assert_eq!(n.load(Ordering::SeqCst), 0);
        assert!(!jobs.resume("count").unwrap().paused);
        jobs.tick("count");
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn the_tick_hook_runs_on_scheduler_ticks_paused_or_not_but_not_on_run_now() {
        let work = Arc::new(AtomicU32::new(0));
        let ticks = Arc::new(AtomicU32::new(0));
        let jobs = Jobs::new(
            vec![Job::new(
                "count",
                Duration::from_secs(1),
                counting(work.clone()),
            )],
            Default::default(),
        );
        let seen = ticks.clone();
        let hook = move || {
            seen.fetch_add(1, Ordering::SeqCst);
        };
        assert!(jobs.on_tick("count", Box::new(hook.clone())));
        assert!(!jobs.on_tick("count", Box::new(hook.clone())), "set twice");
        assert!(!jobs.on_tick("nope", Box::new(hook)));
        jobs.tick("count");
        jobs.pause("count");
        jobs.tick("count");
        jobs.run_now("count");
        assert_eq!(ticks.load(Ordering::SeqCst), 2);
        assert_eq!(work.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn failures_and_panics_are_recorded_and_do_not_escape() {
        let jobs = Jobs::new(
            vec![
                Job::new(
                    "fails",
                    Duration::from_secs(60),
                    Box::new(|| {
                        Err(JobError {
                            doing: "database down",
                            cause: DbError::failed("no answer"),
                        })
                    }),
                ),
                Job::new(
                    "panics",
                    Duration::from_secs(60),
                    Box::new(|| panic!("boom")),
                ),
            ],
            Default::default(),
        );
        let failed = jobs.run_now("fails").unwrap().last_result.unwrap();
        assert!(
            failed.starts_with("error: database down: ") && failed.contains("no answer"),
            "{failed}"
        );
        assert_eq!(
            jobs.run_now("panics").unwrap().last_result.as_deref(),
            Some("error: panicked")
        );
        let text = jobs.metrics.render(crate::ops::metrics::PoolGauges {
            in_use: 0,
            idle: 0,
            max: 0,
        });
        assert!(
            text.contains("creditgate_job_runs_total{job=\"panics\",result=\"panic\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn next_tick_is_the_next_multiple_of_the_interval_since_the_epoch() {
        use chrono::TimeZone;
        let at = |h, m, s| Utc.with_ymd_and_hms(2026, 11, 28, h, m, s).unwrap();
        let secs = Duration::from_secs;
        assert_eq!(next_tick(at(12, 0, 7), secs(10)), at(12, 0, 10));
        assert_eq!(next_tick(at(12, 0, 10), secs(10)), at(12, 0, 20));
        assert_eq!(next_tick(at(12, 0, 7), secs(60)), at(12, 1, 0));
        assert_eq!(
            next_tick(at(23, 59, 59), secs(60)),
            at(23, 59, 59) + secs(1)
        );
    }

    #[test]
    fn the_scheduler_thread_runs_jobs_and_stops() {
        let n = Arc::new(AtomicU32::new(0));
        let jobs = Arc::new(Jobs::new(
            vec![Job::new(
                "count",
                Duration::from_secs(1),
                counting(n.clone()),
            )],
            Default::default(),
        ));
        let handle = jobs.start();
        std::thread::sleep(Duration::from_millis(2500));
        handle.stop();
        let runs = n.load(Ordering::SeqCst);
        assert!(runs >= 1, "ran {runs} times");
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(n.load(Ordering::SeqCst), runs, "ran after stop");
    }
}
