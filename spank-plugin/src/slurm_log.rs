//! A minimal `tracing` subscriber that writes events to Slurm's log (the
//! user's terminal for errors in srun/sbatch, the slurmd log in slurmstepd).
//! No threads, no buffering: each event is one Slurm log call.

use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

struct SlurmLog;

#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

impl Subscriber for SlurmLog {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        // Slurm filters by its own configured level (SlurmdDebug, srun -v).
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut m = Message::default();
        event.record(&mut m);
        let level = *event.metadata().level();
        if level == Level::ERROR {
            spank_sys::log::error(&m.0);
        } else if level == Level::WARN || level == Level::INFO {
            spank_sys::log::info(&m.0);
        } else if level == Level::DEBUG {
            spank_sys::log::debug(&m.0);
        } else {
            spank_sys::log::debug2(&m.0);
        }
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// Routes `tracing` (ours and runtime-core's) to Slurm's log; first call wins.
pub fn install() {
    let _ = tracing::subscriber::set_global_default(SlurmLog);
}
