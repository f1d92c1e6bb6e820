//! Tile families of the chunked kernels, chosen per adapter.

/// Which tile shapes the chunk engine uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TileFamily {
    /// Large register tiles (16×16 per invocation, 16-wide apply workgroups): CPU adapters
    /// (lavapipe, SwiftShader, WARP), where every load is a scalar loop and arithmetic is wide.
    /// Measured on lavapipe, W1-shaped (issue 10), CPU ms of chunk_state / chunk_apply: 16×16
    /// 130 / 185, 8×8 190 / 245, 32×32 130 / 440; the tile loops are unrolled in the source
    /// (`src/unroll.rs`), so larger tiles stay in registers.
    Cpu,
    /// Small register tiles (4×4) and wide workgroups: discrete and integrated GPUs.
    Gpu,
}

impl TileFamily {
    /// The family for an adapter: CPU device types and known software rasterisers get [`Cpu`].
    ///
    /// [`Cpu`]: TileFamily::Cpu
    pub fn for_adapter(info: &wgpu::AdapterInfo) -> Self {
        let name = info.name.to_lowercase();
        let software = ["llvmpipe", "swiftshader", "warp", "basic render"]
            .iter()
            .any(|s| name.contains(s));
        if info.device_type == wgpu::DeviceType::Cpu || software {
            TileFamily::Cpu
        } else {
            TileFamily::Gpu
        }
    }

    /// (TR, TC) register tile, invocations per apply workgroup, per other workgroup.
    pub(crate) fn tiles(self) -> (u32, u32, u32, u32) {
        match self {
            TileFamily::Cpu => (16, 16, 16, 64),
            TileFamily::Gpu => (4, 4, 64, 64),
        }
    }

    /// Tokens and features per FAVOR+ projection tile (`favor_proj`). Lavapipe, W1-shaped
    /// (M = 64), ms per projection: 8×8 ≈ 130, 16×16 ≈ 100 (issue 10).
    pub(crate) fn proj_tile(self) -> u32 {
        match self {
            TileFamily::Cpu => 16,
            TileFamily::Gpu => 4,
        }
    }
}
