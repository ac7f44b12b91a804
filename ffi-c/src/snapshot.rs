//! The allocator snapshot as JSON for C callers.

use gmlake_core::{BlockStateInfo, PoolKind, Snapshot};
use serde_json::{json, Value};

fn state(s: BlockStateInfo) -> Value {
    match s {
        BlockStateInfo::ActiveAllocated => json!("active_allocated"),
        BlockStateInfo::ActivePendingFree => json!("active_pending_free"),
        BlockStateInfo::Inactive => json!("inactive"),
        BlockStateInfo::Released => json!("released"),
        BlockStateInfo::Lent { stitched_address } => {
            json!({ "lent_to_stitched": stitched_address })
        }
    }
}

/// `{"segments": [...], "stitched": [...]}`: every segment with its chunks and blocks (states named
/// as in PyTorch's snapshots), and every stitched block with the chunks it maps. Bytes and addresses
/// are integers.
pub(crate) fn snapshot_json(s: &Snapshot) -> String {
    let segments: Vec<Value> = s
        .segments
        .iter()
        .map(|seg| {
            json!({
                "address": seg.address,
                "total_size": seg.size,
                "stream": seg.stream,
                "segment_type": if seg.pool == PoolKind::Small { "small" } else { "large" },
                "chunks": seg.chunks.iter().map(|c| json!({
                    "handle": c.handle, "offset": c.offset, "size": c.size,
                    "released": c.released, "stitched_mappings": c.stitched_mappings,
                })).collect::<Vec<_>>(),
                "blocks": seg.blocks.iter().map(|b| json!({
                    "address": b.address, "size": b.size, "requested_size": b.requested_size, "state": state(b.state),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let stitched: Vec<Value> = s
        .stitched
        .iter()
        .map(|st| {
            json!({
                "address": st.address, "size": st.size, "active": st.active, "requested_size": st.requested_size,
                "pieces": st.pieces.iter().map(|p| json!({
                    "segment_address": p.segment_address, "chunk_index": p.chunk_index, "handle": p.handle,
                    "offset_in_handle": p.offset_in_handle, "size": p.size,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "segments": segments, "stitched": stitched }).to_string()
}
