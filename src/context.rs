//! Adapter choice, device, queue, features and limits.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::pipeline::PipelineCache;
pub use crate::types::TileFamily;
use crate::{Error, Result};

/// How to build a [`Context`].
#[derive(Clone, Debug)]
pub struct ContextOptions {
    /// Which adapter to use: words (split at spaces or commas), each a case-insensitive
    /// substring of the adapter's name or its backend's name (`vulkan`, `gl`, `metal`, `dx12`,
    /// `webgpu`); every word must match, e.g. `"llvmpipe vulkan"`. `None` reads
    /// `LONGSEQ_ADAPTER`; when that is unset too, a hardware GPU is preferred over a software
    /// adapter and Vulkan/Metal/DX12 over GL.
    pub adapter: Option<String>,
    /// Request `SHADER_F16` when the adapter has it (default true). When false, f16 tensors are
    /// read as packed `u32` words with `unpack2x16float`, the path for adapters without f16.
    pub shader_f16: bool,
    /// Cap on the storage-binding size, in bytes, below the adapter's. Ops split their work to fit
    /// whatever the device allows; a small cap makes that splitting testable.
    pub max_storage_binding_size: Option<u64>,
    /// Cap on workgroup memory, in bytes, below the adapter's. Ops size their tiles (chunk
    /// length, block size, softmax's Dk chunk) from it, so a small cap runs the smaller-tile
    /// fallbacks that adapters with little workgroup memory take. WebGPU guarantees 16384.
    pub max_workgroup_storage_size: Option<u32>,
    /// Tile shapes of the chunked kernels; `None` chooses from the adapter
    /// ([`TileFamily::for_adapter`]), unless `LONGSEQ_TILES` is `cpu` or `gpu`. Forcing either
    /// family is for tests and tuning.
    pub tiles: Option<TileFamily>,
}

impl Default for ContextOptions {
    fn default() -> Self {
        Self {
            adapter: None,
            shader_f16: true,
            max_storage_binding_size: None,
            max_workgroup_storage_size: None,
            tiles: None,
        }
    }
}

/// A device and queue plus what the ops need to know about them. Cheap to share by reference;
/// `Send + Sync`.
pub struct Context {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    f16: bool,
    limits: wgpu::Limits,
    tiles: TileFamily,
    pub(crate) pipelines: PipelineCache,
    pub(crate) chunk_scratch: ScratchPool,
    /// Four zero f32, made once: the binding for a slot a pipeline declares but never reads.
    zero_quad: std::sync::OnceLock<wgpu::Buffer>,
    /// Unique per context, so a tensor can tell which context made it.
    id: u64,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn type_rank(t: wgpu::DeviceType) -> u32 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

fn backend_rank(b: wgpu::Backend) -> u32 {
    match b {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        wgpu::Backend::BrowserWebGpu => 1,
        _ => 2,
    }
}

/// Whether every word of `wanted` (split at spaces and commas) is a case-insensitive substring
/// of the adapter's name or its backend's name.
fn adapter_matches(info: &wgpu::AdapterInfo, wanted: &str) -> bool {
    let name = info.name.to_lowercase();
    let backend = info.backend.to_str().to_lowercase();
    wanted
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .all(|w| name.contains(&w) || backend.contains(&w))
}

impl Context {
    /// Every adapter that can run compute shaders (the candidates of [`Context::new`]), in the
    /// order wgpu lists them. Empty when there is none.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn adapters() -> Vec<wgpu::AdapterInfo> {
        let instance = wgpu::Instance::new(instance_descriptor());
        pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
            .into_iter()
            .filter(|a| {
                a.get_downlevel_capabilities()
                    .flags
                    .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
            })
            .map(|a| a.get_info())
            .collect()
    }

    /// One line for an adapter: `llvmpipe (LLVM 15.0.6, 256 bits) (backend vulkan, Cpu)`.
    pub fn info_line(i: &wgpu::AdapterInfo) -> String {
        format!(
            "{} (backend {}, {:?})",
            i.name,
            i.backend.to_str(),
            i.device_type
        )
    }

    /// Picks an adapter with [`ContextOptions::default`] and opens a device (blocking; not on
    /// wasm32, where [`Context::new_async`] is the way).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new() -> Result<Self> {
        Self::with_options(&ContextOptions::default())
    }

    /// Blocking form of [`Context::new_async`] (not on wasm32).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn with_options(opts: &ContextOptions) -> Result<Self> {
        pollster::block_on(Self::new_async(opts))
    }

    /// Picks an adapter, then requests a device with `SHADER_F16` (when present and wanted) and
    /// the limits the ops use, raised to the adapter's: buffer and storage-binding size,
    /// workgroup storage, invocations per workgroup.
    pub async fn new_async(opts: &ContextOptions) -> Result<Self> {
        let instance = wgpu::Instance::new(instance_descriptor());
        let wanted = opts
            .adapter
            .clone()
            .or_else(|| std::env::var("LONGSEQ_ADAPTER").ok())
            .filter(|s| !s.is_empty());
        let mut adapters: Vec<wgpu::Adapter> = instance
            .enumerate_adapters(wgpu::Backends::all())
            .await
            .into_iter()
            .filter(|a| {
                a.get_downlevel_capabilities()
                    .flags
                    .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
            })
            .collect();
        if adapters.is_empty() {
            return Err(Error::NoAdapter {
                detail: String::new(),
            });
        }
        let names: Vec<String> = adapters
            .iter()
            .map(|a| Self::info_line(&a.get_info()))
            .collect();
        if let Some(w) = &wanted {
            adapters.retain(|a| adapter_matches(&a.get_info(), w));
            if adapters.is_empty() {
                return Err(Error::InvalidArgument {
                    op: "Context::new",
                    name: "LONGSEQ_ADAPTER",
                    reason: format!(
                        "{w:?} matches no adapter (by name or backend); available: {}",
                        names.join("; ")
                    ),
                });
            }
        }
        adapters.sort_by_key(|a| {
            let i = a.get_info();
            (type_rank(i.device_type), backend_rank(i.backend))
        });
        let adapter = adapters.swap_remove(0);
        let info = adapter.get_info();
        let f16 = opts.shader_f16 && adapter.features().contains(wgpu::Features::SHADER_F16);
        let al = adapter.limits();
        let mut limits = wgpu::Limits::default().or_worse_values_from(&al);
        limits.max_buffer_size = al.max_buffer_size;
        limits.max_storage_buffer_binding_size = al.max_storage_buffer_binding_size;
        if let Some(cap) = opts.max_storage_binding_size {
            limits.max_storage_buffer_binding_size =
                limits.max_storage_buffer_binding_size.min(cap);
        }
        limits.max_compute_workgroup_storage_size = al.max_compute_workgroup_storage_size;
        if let Some(cap) = opts.max_workgroup_storage_size {
            limits.max_compute_workgroup_storage_size =
                limits.max_compute_workgroup_storage_size.min(cap);
        }
        limits.max_compute_invocations_per_workgroup = al.max_compute_invocations_per_workgroup;
        limits.max_compute_workgroup_size_x = al.max_compute_workgroup_size_x;
        let required_features = if f16 {
            wgpu::Features::SHADER_F16
        } else {
            wgpu::Features::empty()
        };
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("longseq"),
                required_features,
                required_limits: limits,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::RequestDevice {
                adapter: info.name.clone(),
                message: e.to_string(),
                source: Box::new(e),
            })?;
        let mut ctx = Self::from_device(device, queue, info);
        let env = std::env::var("LONGSEQ_TILES").ok();
        let forced = match env.as_deref().map(str::to_lowercase).as_deref() {
            Some("cpu") => Some(TileFamily::Cpu),
            Some("gpu") => Some(TileFamily::Gpu),
            _ => None,
        };
        if let Some(t) = opts.tiles.or(forced) {
            ctx.tiles = t;
        }
        Ok(ctx)
    }

    /// Wraps an application's own device and queue. f16 storage uses native `f16` when the
    /// device was created with `SHADER_F16`, packed words otherwise; limits are read from the device.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue, info: wgpu::AdapterInfo) -> Self {
        let f16 = device.features().contains(wgpu::Features::SHADER_F16);
        let limits = device.limits();
        let tiles = TileFamily::for_adapter(&info);
        Self {
            device,
            queue,
            info,
            f16,
            limits,
            tiles,
            pipelines: PipelineCache::default(),
            chunk_scratch: ScratchPool::default(),
            zero_quad: std::sync::OnceLock::new(),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// A 16-byte storage buffer of zeros (one vec4, so it fills any array binding), made on first
    /// use and kept: ops bind it at slots their pipeline declares but does not read (the vec4
    /// views of unaligned rows, absent decay slopes) instead of making a buffer per call.
    pub(crate) fn zero_quad(&self) -> &wgpu::Buffer {
        self.zero_quad
            .get_or_init(|| crate::bind::upload_f32(self, &[0f32; 4]))
    }

    /// Tells contexts apart: tensors remember the id of the context that made them.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The wgpu device the ops run on.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }
    /// The queue the ops submit to.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }
    /// The adapter's name, backend, device type and driver.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }
    /// Whether shaders use native `f16` (SHADER_F16 enabled) for f16 tensors.
    pub fn shader_f16(&self) -> bool {
        self.f16
    }
    /// The limits the device was created with (after the caps in [`ContextOptions`]).
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }
    /// Tile shapes the chunked kernels use on this context.
    pub fn tile_family(&self) -> TileFamily {
        self.tiles
    }

    /// Blocks until all submitted work is done (not on wasm32, where the browser drives the
    /// queue).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(Error::device)
    }

    /// A few lines for `longseq info`: adapter, backend, type, f16 and the limits that matter.
    pub fn describe(&self) -> String {
        let i = &self.info;
        let l = &self.limits;
        format!(
            "adapter: {} (backend {}, {:?}, driver {} {})\n\
             shader f16: {}\n\
             max storage binding: {} bytes\n\
             max buffer: {} bytes\n\
             max workgroup storage: {} bytes\n\
             max invocations per workgroup: {}\n\
             max workgroups per dimension: {}\n\
             storage offset alignment: {} bytes",
            i.name,
            i.backend.to_str(),
            i.device_type,
            i.driver,
            i.driver_info,
            if self.f16 {
                "yes"
            } else {
                "no (packed u32 path)"
            },
            l.max_storage_buffer_binding_size,
            l.max_buffer_size,
            l.max_compute_workgroup_storage_size,
            l.max_compute_invocations_per_workgroup,
            l.max_compute_workgroups_per_dimension,
            l.min_storage_buffer_offset_alignment,
        )
    }

    /// One line: adapter name, backend, device type.
    pub fn adapter_line(&self) -> String {
        let i = &self.info;
        Self::info_line(i)
    }
}

/// Scratch buffers kept between calls: on lavapipe creating (and freeing) tens of MiB of buffers
/// costs more than the kernels (≈ 0.5 s of W1's 1.1 s before this pool). A buffer is taken for the
/// recording of one call and returned after it; the queue runs submissions in order, so a later
/// call that reuses it writes only after earlier work with it is done.
#[derive(Default)]
pub(crate) struct ScratchPool(std::sync::Mutex<Vec<wgpu::Buffer>>);

/// Buffers the pool keeps at most (the largest are kept).
const POOL_KEEP: usize = 12;

impl ScratchPool {
    pub(crate) fn take(&self, ctx: &Context, bytes: u64) -> wgpu::Buffer {
        let bytes = bytes.div_ceil(4).max(1) * 4;
        let mut pool = self.0.lock().unwrap();
        let best = (0..pool.len())
            .filter(|&i| pool[i].size() >= bytes && pool[i].size() <= bytes.saturating_mul(2))
            .min_by_key(|&i| pool[i].size());
        match best {
            Some(i) => pool.swap_remove(i),
            None => ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("longseq pooled scratch"),
                size: bytes,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            }),
        }
    }
    pub(crate) fn give(&self, bufs: impl IntoIterator<Item = wgpu::Buffer>) {
        let mut pool = self.0.lock().unwrap();
        pool.extend(bufs);
        if pool.len() > POOL_KEEP {
            pool.sort_by_key(|b| std::cmp::Reverse(b.size()));
            pool.truncate(POOL_KEEP);
        }
    }
}

/// wgpu's defaults without shader debug info (`InstanceFlags::DEBUG`, on in debug builds): its
/// per-statement source locations cost quadratic time in the size of a shader, and the unrolled
/// register tiles made pipeline creation several times slower. `WGPU_DEBUG=1` restores it.
fn instance_descriptor() -> wgpu::InstanceDescriptor {
    let mut d = wgpu::InstanceDescriptor::new_without_display_handle();
    d.flags.remove(wgpu::InstanceFlags::DEBUG);
    d.with_env()
}
