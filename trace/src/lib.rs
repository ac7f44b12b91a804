//! Readers for allocation traces, for replay through gmlake ([`gmlake_core::replay`]).
//!
//! Two formats, gzip-compressed or plain (detected from the file's first bytes):
//! - the text format of `traces/README.md`: a `#` header, then one event per line,
//!   `action addr size stream`, decimal integers;
//! - PyTorch snapshot pickles (`torch.cuda.memory._dump_snapshot()`), read from their
//!   `device_traces`.

use flate2::read::MultiGzDecoder;
use gmlake_core::replay::{TraceAction, TraceEvent};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

mod pickle;

/// Why a trace could not be read. Each names the file; text errors give the line.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line of a text trace is malformed.
    #[error("{path}:{line}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// A pickle is not a PyTorch snapshot with device traces.
    #[error("{path}: not a PyTorch memory snapshot: {message}")]
    Snapshot {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Reads a trace file (text or snapshot pickle, gzip or plain). For a snapshot, `device` picks the
/// device whose trace to read; `None` takes the first device with events.
///
/// # Errors
/// [`TraceError`] naming the file, and the line for text traces.
pub fn read_trace(path: &Path, device: Option<usize>) -> Result<Vec<TraceEvent>, TraceError> {
    read_trace_of(path, device).map(|(events, _)| events)
}

/// As [`read_trace`], and for a snapshot the device whose trace was read (`None` for a text
/// trace, which has one device).
///
/// # Errors
/// As [`read_trace`].
pub fn read_trace_of(
    path: &Path,
    device: Option<usize>,
) -> Result<(Vec<TraceEvent>, Option<usize>), TraceError> {
    let io = |source| TraceError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut raw = BufReader::new(file);
    let gz = raw.fill_buf().map_err(io)?.starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn Read> = if gz {
        Box::new(MultiGzDecoder::new(raw))
    } else {
        Box::new(raw)
    };
    let mut reader = BufReader::with_capacity(1 << 16, reader);
    // Pickles (protocol 2 and later) start with the PROTO opcode 0x80.
    if reader.fill_buf().map_err(io)?.first() == Some(&0x80) {
        return pickle::read_snapshot(reader, path, device).map(|(e, d)| (e, Some(d)));
    }
    Ok((parse_text(reader, path)?, None))
}

/// Parses the text format from any reader; `path` is used in errors.
///
/// # Errors
/// [`TraceError::Parse`] for a malformed line, [`TraceError::Io`] for a read failure.
pub fn parse_text(reader: impl BufRead, path: &Path) -> Result<Vec<TraceEvent>, TraceError> {
    let mut events = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|source| TraceError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |message: String| TraceError::Parse {
            path: path.to_path_buf(),
            line: i as u64 + 1,
            message,
        };
        let mut fields = line.split_ascii_whitespace();
        let (Some(action), Some(addr), Some(size), Some(stream), None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err(err(format!(
                "expected `action addr size stream`, got `{line}`"
            )));
        };
        let action =
            TraceAction::parse(action).ok_or_else(|| err(format!("unknown action `{action}`")))?;
        let num = |what: &str, s: &str| {
            s.parse::<u64>()
                .map_err(|_| err(format!("{what} `{s}` is not a non-negative integer")))
        };
        events.push(TraceEvent {
            action,
            addr: num("address", addr)?,
            size: num("size", size)?,
            stream: num("stream", stream)?,
        });
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_errors_name_file_and_line() {
        let p = Path::new("t.txt");
        let ok = parse_text(
            "# header\nalloc 1 10 0\n\nfree_requested 1 10 0\n".as_bytes(),
            p,
        )
        .unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[1].action, TraceAction::FreeRequested);
        let e = parse_text("# h\nalloc 1 10 0\nalloc x 10 0\n".as_bytes(), p).unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.txt:3: address `x` is not a non-negative integer"
        );
        let e = parse_text("malloc 1 2 3\n".as_bytes(), p).unwrap_err();
        assert!(e.to_string().starts_with("t.txt:1: unknown action"));
        let e = parse_text("alloc 1 2\n".as_bytes(), p).unwrap_err();
        assert!(e.to_string().contains("expected"));
        let e = parse_text("alloc 1 2 3 4\n".as_bytes(), p).unwrap_err();
        assert!(e.to_string().contains("expected"));
    }
}
