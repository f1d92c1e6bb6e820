//! How the attend kernels of exact softmax attention cover `rows × L` queries and keys: the tile
//! family (register tiles for CPU adapters, workgroup-memory tiles for GPUs), passes that fit the
//! storage-binding limit and key segments that keep every invocation's loops bounded.

use std::collections::HashMap;
use std::sync::Mutex;

use super::softmax::{Attend, PosBias};
use crate::sizes::{softmax_tiles, NA};
use crate::types::batch::{GqaDims, Layout, Strides};
use crate::{Context, Error, Result};

/// Which kernel shape exact softmax attention (and DiagAttention) uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttentionTiles {
    /// `attend_reg`: 16×8 logit and 16×16 output register tiles per invocation, 8 invocations
    /// per workgroup. For CPU adapters (lavapipe, SwiftShader, WARP): every per-lane load is a
    /// scalar loop there while arithmetic is wide, so FMAs per load decide speed.
    Cpu,
    /// `attend`: wide workgroups, Q and K tiles through workgroup memory, 8 logits and 8 output
    /// columns per invocation. For discrete and integrated GPUs.
    Gpu,
}

impl AttentionTiles {
    /// The family for an adapter: CPU device types and known software rasterisers get `Cpu`.
    pub fn for_adapter(info: &wgpu::AdapterInfo) -> Self {
        let name = info.name.to_lowercase();
        let software = ["llvmpipe", "swiftshader", "warp", "basic render"]
            .iter()
            .any(|s| name.contains(s));
        match info.device_type == wgpu::DeviceType::Cpu || software {
            true => AttentionTiles::Cpu,
            false => AttentionTiles::Gpu,
        }
    }
}

/// Families forced per context (by context id).
static FORCED: Mutex<Option<HashMap<u64, AttentionTiles>>> = Mutex::new(None);

/// Forces the tile family of softmax attention and DiagAttention on `ctx` (`None`: chosen from
/// the adapter, or `LONGSEQ_TILES=cpu|gpu`). For tests and tuning: both families give the same
/// results on every adapter, only their speed differs.
pub fn force_attention_tiles(ctx: &Context, tiles: Option<AttentionTiles>) {
    let mut m = FORCED.lock().unwrap_or_else(|e| e.into_inner());
    let m = m.get_or_insert_with(HashMap::new);
    match tiles {
        Some(t) => m.insert(ctx.id(), t),
        None => m.remove(&ctx.id()),
    };
}

/// The family `ctx` uses.
pub(crate) fn tiles_for(ctx: &Context) -> AttentionTiles {
    let forced = FORCED
        .lock()
        .ok()
        .and_then(|m| m.as_ref()?.get(&ctx.id()).copied());
    let env = || match std::env::var("LONGSEQ_TILES").ok()?.to_lowercase().as_str() {
        "cpu" => Some(AttentionTiles::Cpu),
        "gpu" => Some(AttentionTiles::Gpu),
        _ => None,
    };
    forced
        .or_else(env)
        .unwrap_or_else(|| AttentionTiles::for_adapter(ctx.adapter_info()))
}

/// Tile sizes of one kernel.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tiles {
    pub family: AttentionTiles,
    /// Invocations per workgroup.
    pub wg: u32,
    /// Queries per workgroup.
    pub bq: u32,
    /// Keys per tile.
    pub bk: u32,
    /// Columns of Dk per chunk.
    pub dkc: u32,
    /// Column blocks of Dv per query tile (workgroups side by side; 1 for `attend_reg`).
    pub n_cb: u32,
}

/// Queries, keys per tile and queries per register tile of `attend_reg` (RQ, RK, RT).
const RQ: u32 = 32;
const RK: u32 = 32;
const RT: u32 = 16;

pub(crate) fn tiles(ctx: &Context, d: &Geom, cfg_rerope: bool) -> Tiles {
    let family = match cfg_rerope {
        // ReRoPE's pairwise logits live in `attend` only.
        true => AttentionTiles::Gpu,
        false => tiles_for(ctx),
    };
    match family {
        AttentionTiles::Gpu => {
            let (wg, bq, bk, dkc) = softmax_tiles(ctx);
            let n_cb = (d.dv as u32).div_ceil((wg / bq) * NA);
            Tiles {
                family,
                wg,
                bq,
                bk,
                dkc,
                n_cb,
            }
        }
        AttentionTiles::Cpu => {
            let ncb = (d.dv as u32).div_ceil(16);
            let lim = ctx.limits();
            let wg = (2 * ncb)
                .max(8)
                .min(lim.max_compute_invocations_per_workgroup)
                .min(lim.max_compute_workgroup_size_x);
            let mem = lim.max_compute_workgroup_storage_size;
            let mut dkc = 64u32;
            // rq_s + rk_s (dkc · 8 vec4 each), rs_s + rp_s (256 vec4 each), 3 · RQ row stats.
            while dkc > 4 && (2 * dkc * 8 * 16 + 2 * 256 * 16 + 3 * RQ * 4) > mem {
                dkc /= 2;
            }
            Tiles {
                family,
                wg,
                bq: RQ,
                bk: RK,
                dkc,
                n_cb: 1,
            }
        }
    }
}

/// Whether `attend_reg` can run with these tiles: its invocations must cover the output tiles.
pub(crate) fn reg_fits(ctx: &Context, t: &Tiles, d: &Geom) -> bool {
    let mem = ctx.limits().max_compute_workgroup_storage_size;
    2 * (d.dv as u32).div_ceil(16) <= t.wg
        && (2 * t.dkc * 8 * 16 + 2 * 256 * 16 + 3 * RQ * 4) <= mem
}

/// Loop iterations one invocation may spend in one dispatch. llvmpipe stops every loop of an
/// invocation silently once their iterations together reach 65 535 (Mesa's
/// `LP_MAX_TGSI_LOOP_ITERATIONS`, shared by all loops of a shader); the margin covers the loops
/// outside the key tiles, and the counts below assume nothing is unrolled.
const LOOP_BUDGET: u64 = 48_000;

/// Upper bound on the loop iterations one invocation spends per key tile.
fn iterations_per_tile(t: &Tiles, dk: u64) -> u64 {
    let (wg, bq, bk, dkc) = (t.wg as u64, t.bq as u64, t.bk as u64, t.dkc as u64);
    let chunks = dk.div_ceil(dkc);
    let loads = chunks * (1 + (bq * dkc).div_ceil(wg) + (bk * dkc).div_ceil(wg));
    match t.family {
        AttentionTiles::Gpu => {
            let (spt, na) = (8u64, NA as u64);
            loads + dk * (spt + 1) + 2 * spt + 3 * bk + na * (bk + 1) + 1
        }
        AttentionTiles::Cpu => {
            let rt = RT as u64;
            let s = dk * 5 + 1;
            let logits = rt * 11;
            let rows = bq.div_ceil(wg) * (2 * bk + 2);
            let pv = rt * 5 + bk * (1 + 16 + 4 * 21) + 1;
            loads + s + logits + rows + pv
        }
    }
}

/// How the attend kernel covers `rows × L` queries and keys: passes of `rows` rows and `queries`
/// queries (`rows == 1` or `queries == L`), each pass one dispatch per segment of `keys` keys.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct AttendPlan {
    pub rows: u64,
    pub queries: u64,
    pub keys: u64,
}

/// Plans passes over `nr` rows so that every binding fits the storage-binding limit and no
/// invocation loops longer than [`LOOP_BUDGET`]. `in_bytes`/`out_bytes`: element sizes of the
/// inputs and of the written slot.
pub(crate) fn plan_attend(
    ctx: &Context,
    op: &'static str,
    t: &Tiles,
    d: &Geom,
    nr: u64,
    (in_bytes, out_bytes): (u64, u64),
) -> Result<AttendPlan> {
    let (lq, lk, dk, dv) = (d.lq as u64, d.lk as u64, d.dk as u64, d.dv as u64);
    // blhd: a token of one head sits among the tokens of all heads, so a binding over a range of
    // tokens holds every head's; a unit is one row (bhld) or one batch entry of `hq` rows (blhd).
    let (qf, kf, unit) = match d.layout {
        Layout::Bhld => (1, 1, 1),
        Layout::Blhd => (d.hq as u64, d.hkv as u64, d.hq as u64),
    };
    let per_tile = iterations_per_tile(t, dk);
    // A segment may start mid-tile, so it can cost one tile more than its length says.
    let seg_tiles = (LOOP_BUDGET / per_tile).saturating_sub(1);
    if seg_tiles == 0 {
        let max_dk = (1..dk)
            .rev()
            .find(|&x| LOOP_BUDGET / iterations_per_tile(t, x) >= 2)
            .unwrap_or(0);
        return Err(Error::TooLarge {
            op,
            what: format!(
                "head dim Dk = {dk} (one key tile needs {per_tile} loop iterations per \
                 invocation; the largest Dk that runs is {max_dk})"
            ),
            needed: dk,
            limit: max_dk,
        });
    }
    let seg_loop = seg_tiles * t.bk as u64;
    let split = lk > seg_loop;
    let limit = ctx.limits().max_storage_buffer_binding_size;
    let room = limit.saturating_sub(ctx.limits().min_storage_buffer_offset_alignment as u64 + 4);
    // Bytes per query (q, o, f32 state) and per key (k, v).
    let per_query = vec![dk * in_bytes * qf, dv * out_bytes * qf];
    let per_key = [dk * in_bytes * kf, dv * in_bytes * kf];
    // Bytes of one unit of rows in every binding.
    let mut per_unit: Vec<u64> = per_query.iter().map(|b| b * lq).collect();
    per_unit.extend(per_key.iter().map(|b| b * lk));
    if split {
        per_unit.push((dv * 4 + 8) * lq * unit);
    }
    if per_unit.iter().all(|&b| b <= room) {
        let units = per_unit
            .iter()
            .map(|&b| (room / b.max(1)).min(u32::MAX as u64 / b.max(1)))
            .min()
            .unwrap_or(1)
            .max(1);
        return Ok(AttendPlan {
            rows: (units * unit).clamp(1, nr.max(1)),
            queries: lq,
            keys: seg_loop.min(lk),
        });
    }
    // One row per pass, split along L: queries into blocks, keys into segments that fit.
    let mut state = per_query.clone();
    state.push(dv * 4 + 8);
    let queries = state
        .iter()
        .map(|&b| room / b.max(1))
        .min()
        .unwrap_or(0)
        .min(lq);
    let mut keys = per_key.iter().map(|&b| room / b.max(1)).min().unwrap_or(0);
    keys = seg_loop.min(keys);
    if keys > t.bk as u64 {
        keys = keys / t.bk as u64 * t.bk as u64;
    }
    if queries == 0 || keys == 0 {
        return Err(Error::TooLarge {
            op,
            what: "one query's or key's vectors".into(),
            needed: dk.max(dv) * in_bytes.max(out_bytes),
            limit,
        });
    }
    Ok(AttendPlan {
        rows: 1,
        queries,
        keys: keys.min(lk),
    })
}

/// Queries of `[q0, q0 + nq)` that may see a key of `[klo, khi)` (a superset; never empty
/// when the keys come from [`key_span`]).
pub(crate) fn query_span(
    cfg: &Attend,
    pos: &PosBias<'_>,
    (q0, nq): (u64, u64),
    (klo, khi): (u64, u64),
) -> (u64, u64) {
    let (mut qa, mut qb) = (q0, q0 + nq);
    if cfg.causal || pos.window > 0 {
        qa = qa.max(klo);
    }
    // Packed sequences move the block boundaries off multiples of the block.
    let blocks = cfg.block > 0 && pos.seqs.is_none();
    if pos.window > 0 {
        qb = qb.min(khi + pos.window as u64 - 1);
    }
    if blocks {
        let b = cfg.block as u64;
        qa = qa.max(klo / b * b);
        qb = qb.min(((khi - 1) / b + 1) * b);
    }
    (qa, qb.max(qa))
}

/// Keys `[lo, hi)` that some query of `[q0, q0 + nq)` sees (key ranges are monotone in i).
pub(crate) fn key_span(
    d: &Geom,
    cfg: &Attend,
    pos: &PosBias<'_>,
    (q0, nq): (u64, u64),
) -> (u64, u64) {
    let len = d.lk as u64;
    let last = q0 + nq - 1;
    let causal = cfg.causal || pos.window > 0;
    let mut hi = if causal { last + 1 } else { len };
    let mut lo = 0;
    // Packed sequences move the block boundaries off multiples of the block.
    if cfg.block > 0 && pos.seqs.is_none() {
        let b = cfg.block as u64;
        lo = q0 / b * b;
        hi = hi.min((last / b + 1) * b).min(len);
    }
    if pos.window > 0 {
        lo = lo.max((q0 + 1).saturating_sub(pos.window as u64));
    }
    (lo, hi)
}

/// Sizes and memory order of one attend call: q `[B, Hq, Lq, Dk]`, k `[B, Hkv, Lk, Dk]`,
/// v `[B, Hkv, Lk, Dv]`, o `[B, Hq, Lq, Dv]`, all in `layout`. Row `r` is (batch `r / Hq`, query
/// head `r % Hq`); it reads key/value head `(r % Hq) / (Hq / Hkv)`.
#[derive(Clone, Debug)]
pub(crate) struct Geom {
    pub b: usize,
    pub hq: usize,
    pub hkv: usize,
    pub lq: usize,
    pub lk: usize,
    pub dk: usize,
    pub dv: usize,
    pub layout: Layout,
}

impl Geom {
    pub fn from_gqa(g: &GqaDims) -> Self {
        Self {
            b: g.batch,
            hq: g.q_heads,
            hkv: g.kv_heads,
            lq: g.q_len,
            lk: g.kv_len,
            dk: g.dk,
            dv: g.dv,
            layout: g.layout,
        }
    }

    /// Rows B · Hq.
    pub fn rows(&self) -> u64 {
        (self.b * self.hq) as u64
    }

    pub fn q(&self) -> Strides {
        self.layout.strides(self.hq, self.lq, self.dk)
    }

    pub fn k(&self) -> Strides {
        self.layout.strides(self.hkv, self.lk, self.dk)
    }

    pub fn v(&self) -> Strides {
        self.layout.strides(self.hkv, self.lk, self.dv)
    }

    pub fn o(&self) -> Strides {
        self.layout.strides(self.hq, self.lq, self.dv)
    }

    /// Element offset of row `r`'s token 0 in a q- or o-shaped tensor with strides `s`.
    pub fn q_base(&self, s: &Strides, r: u64) -> u64 {
        let h = self.hq as u64;
        (r / h) * s.batch as u64 + (r % h) * s.head as u64
    }

    /// Element offset of the key/value head row `r` reads, token 0, strides `s`.
    pub fn kv_base(&self, s: &Strides, r: u64) -> u64 {
        let h = self.hq as u64;
        let group = (self.hq / self.hkv) as u64;
        (r / h) * s.batch as u64 + (r % h) / group * s.head as u64
    }
}
