//! PyTorch snapshot pickles: the dict of `torch.cuda.memory._snapshot()`, whose `device_traces` is a
//! list (one per device) of lists of trace entries with `action`, `addr`, `size` and `stream`.

use crate::TraceError;
use gmlake_core::replay::{TraceAction, TraceEvent};
use serde_pickle::{DeOptions, HashableValue, Value};
use std::io::Read;
use std::path::Path;

fn key(name: &str) -> HashableValue {
    HashableValue::String(name.to_string())
}

fn as_u64(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::I64(i) => u64::try_from(*i).ok(),
        Value::Int(b) => u64::try_from(b.clone()).ok(),
        Value::F64(f) if *f >= 0.0 => Some(*f as u64),
        _ => None,
    }
}

pub(crate) fn read_snapshot(
    reader: impl Read,
    path: &Path,
    device: Option<usize>,
) -> Result<(Vec<TraceEvent>, usize), TraceError> {
    let bad = |message: String| TraceError::Snapshot {
        path: path.to_path_buf(),
        message,
    };
    // Snapshots share objects (stack frames, file names) between entries, and serde-pickle loses
    // track of a shared object nested in another shared one; such a nested object (a frame, never
    // an entry's action, address or size) reads as None instead of failing the whole file.
    let options = DeOptions::new()
        .replace_unresolved_globals()
        .replace_recursive_structures();
    let value = serde_pickle::value_from_reader(reader, options)
        .map_err(|e| bad(format!("unpickling failed: {e}")))?;
    let Value::Dict(top) = value else {
        return Err(bad("the top level is not a dict".into()));
    };
    let Some(Value::List(devices)) = top.get(&key("device_traces")) else {
        return Err(bad("it has no `device_traces` list (record with torch.cuda.memory._record_memory_history first)".into()));
    };
    let pick = match device {
        Some(d) => d,
        None => devices
            .iter()
            .position(|d| matches!(d, Value::List(l) if !l.is_empty()))
            .unwrap_or(0),
    };
    let Some(Value::List(entries)) = devices.get(pick) else {
        return Err(bad(format!(
            "it has no trace for device {pick} ({} devices)",
            devices.len()
        )));
    };
    let mut events = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let Value::Dict(d) = e else {
            return Err(bad(format!("trace entry {i} is not a dict")));
        };
        let Some(Value::String(action)) = d.get(&key("action")) else {
            return Err(bad(format!("trace entry {i} has no action")));
        };
        let Some(action) = TraceAction::parse(action) else {
            continue;
        };
        let size = as_u64(d.get(&key("size"))).unwrap_or(0);
        let stream = as_u64(d.get(&key("stream"))).unwrap_or(0);
        let addr = match action {
            TraceAction::Oom => 0,
            _ => as_u64(d.get(&key("addr")))
                .ok_or_else(|| bad(format!("trace entry {i} ({action:?}) has no addr")))?,
        };
        events.push(TraceEvent {
            action,
            addr,
            size,
            stream,
        });
    }
    Ok((events, pick))
}
