//! Per-phase timings (resolve, mount, assemble, enter), logged at debug level
//! with the job and step ids so a slow phase can be found in the slurmd log.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Phase {
    name: &'static str,
    start: Instant,
}

impl Phase {
    pub fn start(name: &'static str) -> Phase {
        Phase {
            name,
            start: Instant::now(),
        }
    }

    /// Logs the phase's duration and returns it.
    pub fn done(self, job: u32, step: u32) -> Duration {
        let took = self.start.elapsed();
        log(job, step, self.name, took);
        took
    }

    /// The duration so far, to be logged later with [`log`].
    pub fn stop(self) -> (&'static str, Duration) {
        (self.name, self.start.elapsed())
    }
}

pub fn log(job: u32, step: u32, phase: &str, took: Duration) {
    tracing::debug!(
        "shifter: job {job} step {} phase {phase} took {:.1} ms",
        step_name(step),
        took.as_secs_f64() * 1000.0
    );
}

/// Slurm's special step ids by name, others as numbers.
pub fn step_name(step: u32) -> String {
    match step {
        spank_sys::BATCH_STEP_ID => "batch".to_owned(),
        spank_sys::EXTERN_STEP_ID => "extern".to_owned(),
        0xffff_fffa => "interactive".to_owned(),
        n => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_steps_are_named() {
        assert_eq!(step_name(spank_sys::BATCH_STEP_ID), "batch");
        assert_eq!(step_name(spank_sys::EXTERN_STEP_ID), "extern");
        assert_eq!(step_name(3), "3");
    }
}
