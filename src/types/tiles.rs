//! Tile families of the chunked kernels, chosen per adapter.

/// Which tile shapes the chunk engine uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TileFamily {
    /// Larger register tiles (8×8 per invocation): CPU adapters (lavapipe, SwiftShader, WARP),
    /// where every load is a scalar loop and arithmetic is wide. Not larger: on lavapipe 16×16
    /// (and 8×16) ran the contractions 2–3× slower than 8×8 (W1-shaped, issue 10), its tile
    /// loops no longer unrolled into registers.
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
            TileFamily::Cpu => (8, 8, 64, 64),
            TileFamily::Gpu => (4, 4, 64, 64),
        }
    }
}
