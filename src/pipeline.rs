//! WGSL sources, their specialisation per storage dtype, and the pipeline cache.
//!
//! Each shader in `shaders/` declares its element arrays as `array<ST>` (read) or `array<OT>`
//! (written) and reads and writes them only through `ld_NAME(i) -> f32` and `st_NAME(i, f32)`.
//! A read array may also be declared `array<ST4>`, four elements per entry, and read through
//! `ld4_NAME(i4) -> vec4<f32>` (entry i4 = elements 4·i4 .. 4·i4 + 3): one load per four elements,
//! for tensors whose rows the host has checked are 4-aligned.
//! This module prepends the dtype prelude and generates those accessors, so one WGSL file serves
//! f32, native f16 (SHADER_F16) and f16 packed two to a `u32` word (adapters without f16).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::{Context, DType, Error, Result};

/// How element arrays are stored in a shader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Storage {
    F32,
    /// `enable f16;` arrays of `f16`.
    F16,
    /// f16 pairs in `u32` words; outputs are written as f32 and packed afterwards.
    F16Packed,
}

impl Storage {
    pub(crate) fn for_dtype(ctx: &Context, d: DType) -> Self {
        match d {
            DType::F32 => Storage::F32,
            DType::F16 if ctx.shader_f16() => Storage::F16,
            DType::F16 => Storage::F16Packed,
        }
    }
}

/// The layout of a uniform struct: its size and each member's byte offset.
#[derive(Debug)]
#[cfg_attr(not(test), allow(dead_code))] // read by the reflection tests
pub(crate) struct Layout {
    pub size: usize,
    pub fields: Vec<(&'static str, usize)>,
}

/// A `#[repr(C)]` struct bound as a shader's `Params` uniform (declared with `uniform!`).
#[cfg_attr(not(test), allow(dead_code))] // layout() is read by the reflection tests
pub(crate) trait Uniform: bytemuck::Pod {
    fn layout() -> Layout;
}

/// The WGSL source of `shader` (its file under `shaders/`). The registry that pairs each shader
/// with its entry points and `Params` type is `crate::kernels`, which sits above the ops (it names
/// their `Params` types) so that this module, which every op imports, imports no op.
pub(crate) fn source(shader: &str) -> Option<&'static str> {
    Some(match shader {
        "softmax_attention" => include_str!("../shaders/softmax_attention.wgsl"),
        "chunk_attention" => include_str!("../shaders/chunk_attention.wgsl"),
        "lightning_fix" => include_str!("../shaders/lightning_fix.wgsl"),
        "transnormer" => include_str!("../shaders/transnormer.wgsl"),
        "favor" => include_str!("../shaders/favor.wgsl"),
        "favor_batch" => include_str!("../shaders/favor_batch.wgsl"),
        "recurrent" => include_str!("../shaders/recurrent.wgsl"),
        "cast" => include_str!("../shaders/cast.wgsl"),
        "embedding" => include_str!("../shaders/embedding.wgsl"),
        "rope" => include_str!("../shaders/rope.wgsl"),
        "hippo" => include_str!("../shaders/hippo.wgsl"),
        "dplr" => include_str!("../shaders/dplr.wgsl"),
        "fft" => include_str!("../shaders/fft.wgsl"),
        "fft_conv" => include_str!("../shaders/fft_conv.wgsl"),
        "scan" => include_str!("../shaders/scan.wgsl"),
        "selective_scan" => include_str!("../shaders/selective_scan.wgsl"),
        "ssm_kernel" => include_str!("../shaders/ssm_kernel.wgsl"),
        "s4d_batch" => include_str!("../shaders/s4d_batch.wgsl"),
        "gla" => include_str!("../shaders/gla.wgsl"),
        _ => return None,
    })
}

/// Helpers every shader may call, prepended when the shader calls one and does not define it.
/// `(name, needs, code)`: `needs` is an override the helper reads, which the shader must declare.
const PRELUDE: &[(&str, Option<&str>, &str)] = &[
    (
        "abar_pow",
        None,
        "// High 32 bits of the 64-bit product a * b.
fn mulhi(a: u32, b: u32) -> u32 {
    let a0 = a & 0xFFFFu;
    let a1 = a >> 16u;
    let b0 = b & 0xFFFFu;
    let b1 = b >> 16u;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let mid = ((a0 * b0) >> 16u) + (p01 & 0xFFFFu) + (p10 & 0xFFFFu);
    return a1 * b1 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u);
}

// Abar^l of the mode at word offset o of the shader's `modes` table (src/ssm/kernel.rs):
// exp(l log|Abar|) at the phase l * turns mod 1, reduced exactly in 64-bit fixed point.
fn abar_pow(o: u32, l: u32) -> vec2<f32> {
    let lo = modes[o + 4u];
    let ph = modes[o + 3u] * l + mulhi(l, lo);
    let pl = lo * l;
    let t = f32(bitcast<i32>(ph)) * 2.3283064365386963e-10 + f32(pl) * 5.421010862427522e-20;
    let ang = 6.283185307179586 * t;
    return exp(f32(l) * bitcast<f32>(modes[o + 2u])) * vec2<f32>(cos(ang), sin(ang));
}",
    ),
    (
        "wg_index",
        None,
        "// Linear workgroup index of a folded grid (see schedule::fold_grid).
fn wg_index(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.x + nwg.x * (wg.y + nwg.y * wg.z);
}",
    ),
    (
        "gid",
        Some("WG"),
        "// Linear invocation index of a folded grid of WG-wide workgroups.
fn gid(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + nwg.x * (wg.y + nwg.y * wg.z)) * WG + lid;
}",
    ),
    (
        "cmul",
        None,
        "fn cmul(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(a.x * b.x - a.y * b.y, a.x * b.y + a.y * b.x);
}",
    ),
    (
        "put_o",
        None,
        "// Stores columns d..d+3 of a row of o with one branch at the caller (a branch per column
// stops unrolling): m = dv - 1 - d is the last valid offset; a column past it stores column m's
// value again.
fn put_o(at: u32, m: u32, y: vec4<f32>) {
    let y1 = select(y.x, y.y, m >= 1u);
    let y2 = select(y1, y.z, m >= 2u);
    st_o(at, y.x);
    st_o(at + min(1u, m), y1);
    st_o(at + min(2u, m), y2);
    st_o(at + min(3u, m), select(y2, y.w, m >= 3u));
}",
    ),
    (
        "fmax",
        None,
        "// max that keeps NaN out of neither argument's way: b when b > a, else a.
fn fmax(a: f32, b: f32) -> f32 {
    return select(a, b, b > a);
}",
    ),
    (
        "phi",
        Some("FMAP"),
        "// The feature map FMAP (codes from FeatureMap::shader_id) of one element.
fn phi(x: f32) -> f32 {
    if (FMAP == FMAP_ELU1) {
        return select(exp(x), x + 1.0, x > 0.0);
    }
    if (FMAP == FMAP_RELU) {
        return select(x, 0.0, x < 0.0);
    }
    if (FMAP == FMAP_ELU) {
        return select(exp(x) - 1.0, x, x > 0.0);
    }
    return x;
}",
    ),
];

/// The prelude for `src`: the feature-map codes, then each helper it calls but does not define.
fn prelude(src: &str) -> String {
    use crate::types::FeatureMap;
    let mut out = String::new();
    for (name, fm) in [
        ("ELU1", FeatureMap::Elu1),
        ("RELU", FeatureMap::Relu),
        ("IDENTITY", FeatureMap::Identity),
        ("ELU", FeatureMap::Elu),
    ] {
        out += &format!("const FMAP_{name}: u32 = {}u;\n", fm.shader_id());
    }
    for (name, needs, code) in PRELUDE {
        let called = src.contains(&format!("{name}("));
        let defined = src.contains(&format!("fn {name}("));
        let has_need = needs.is_none_or(|o| src.contains(&format!("override {o}")));
        if called && !defined && has_need {
            out += code;
            out.push('\n');
        }
    }
    out
}

/// The prelude plus accessors for every `array<ST>` / `array<OT>` binding in `src`.
pub(crate) fn specialise(src: &str, storage: Storage) -> String {
    let (st, st4, ot, head) = match storage {
        Storage::F32 => ("f32", "vec4<f32>", "f32", ""),
        Storage::F16 => ("f16", "vec4<f16>", "f16", "enable f16;\n"),
        Storage::F16Packed => ("u32", "vec2<u32>", "f32", ""),
    };
    let mut out = format!(
        "{head}alias ST = {st};\nalias ST4 = {st4};\nalias OT = {ot};\n{}",
        prelude(src)
    );
    for line in src.lines() {
        let l = line.trim();
        let Some(rest) = l.strip_prefix("@group(0)") else {
            continue;
        };
        let Some(name_start) = rest.find('>') else {
            continue;
        };
        let decl = &rest[name_start + 1..];
        let Some((name, ty)) = decl.split_once(':') else {
            continue;
        };
        let name = name.trim();
        let ty = ty.trim().trim_end_matches(';').trim();
        if ty == "array<ST>" {
            let body = match storage {
                Storage::F16Packed => format!("return unpack2x16float({name}[i >> 1u])[i & 1u];"),
                _ => format!("return f32({name}[i]);"),
            };
            out += &format!("fn ld_{name}(i: u32) -> f32 {{ {body} }}\n");
        } else if ty == "array<ST4>" {
            let body = match storage {
                Storage::F16Packed => format!(
                    "let w = {name}[i]; return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));"
                ),
                _ => format!("return vec4<f32>({name}[i]);"),
            };
            out += &format!("fn ld4_{name}(i: u32) -> vec4<f32> {{ {body} }}\n");
        } else if ty == "array<OT>" {
            out += &format!("fn st_{name}(i: u32, x: f32) {{ {name}[i] = OT(x); }}\n");
        }
    }
    out + src
}

/// Constants as (name, value) pairs.
type Consts = Vec<(&'static str, u32)>;

/// Splits `constants` into those `src` declares as `const NAME: u32 = ..;` (compile-time sizes
/// such as register tiles, which size function-scope arrays where overrides may not), substituted
/// into the source, and the pipeline overrides: (code, substituted, overrides).
fn substitute_consts(src: &str, constants: &[(&'static str, u32)]) -> (String, Consts, Consts) {
    let mut code = src.to_string();
    let (mut substituted, mut overrides) = (Vec::new(), Vec::new());
    for &(name, v) in constants {
        let decl = format!("const {name}: u32 = ");
        match code.find(&decl) {
            Some(at) => {
                let end = at + code[at..].find(';').expect("const declaration ends with ;");
                code.replace_range(at..end, &format!("{decl}{v}u"));
                substituted.push((name, v));
            }
            None => overrides.push((name, v)),
        }
    }
    (code, substituted, overrides)
}

/// Builds one compute pipeline inside a validation error scope.
#[cfg(test)]
fn compile(
    ctx: &Context,
    shader: &str,
    entry: &str,
    code: String,
    constants: &[(&'static str, u32)],
) -> Result<wgpu::ComputePipeline> {
    let module = create_module(ctx, shader, entry, code)?;
    compile_module(ctx, shader, entry, &module, constants)
}

/// Parses `code` inside a validation error scope: a bad shader is an [`Error::Shader`].
fn create_module(
    ctx: &Context,
    shader: &str,
    entry: &str,
    code: String,
) -> Result<wgpu::ShaderModule> {
    let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
    let module = ctx
        .device
        .create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(shader),
            source: wgpu::ShaderSource::Wgsl(code.into()),
        });
    popped_error(shader, entry, scope).map(|()| module)
}

/// Builds one compute pipeline of `module` inside a validation error scope.
fn compile_module(
    ctx: &Context,
    shader: &str,
    entry: &str,
    module: &wgpu::ShaderModule,
    constants: &[(&'static str, u32)],
) -> Result<wgpu::ComputePipeline> {
    let consts: Vec<(&str, f64)> = constants.iter().map(|&(n, v)| (n, v as f64)).collect();
    let dev = &ctx.device;
    let scope = dev.push_error_scope(wgpu::ErrorFilter::Validation);
    let pipeline = dev.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(entry),
        layout: None,
        module,
        entry_point: Some(entry),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants: &consts,
            zero_initialize_workgroup_memory: false,
        },
        cache: None,
    });
    popped_error(shader, entry, scope).map(|()| pipeline)
}

/// The error an error scope caught, as an [`Error::Shader`].
fn popped_error(shader: &str, entry: &str, scope: wgpu::ErrorScopeGuard) -> Result<()> {
    // On the web nothing may block: a shader error reaches the browser console instead.
    #[cfg(target_arch = "wasm32")]
    let popped: Option<wgpu::Error> = {
        drop(scope.pop());
        None
    };
    #[cfg(not(target_arch = "wasm32"))]
    let popped = pollster::block_on(scope.pop());
    match popped {
        Some(err) => Err(Error::Shader {
            shader: shader.into(),
            entry: entry.into(),
            message: err.to_string(),
            source: crate::error::wgpu_source(err),
        }),
        None => Ok(()),
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    shader: &'static str,
    entry: &'static str,
    storage: Storage,
    constants: Vec<(&'static str, u32)>,
}

/// A shader module: (shader, storage, the compile-time constants substituted into the source).
type ModuleKey = (&'static str, Storage, Consts);

/// Compiled pipelines, one per (shader, entry point, storage, override constants), and their
/// modules, shared by the entry points of one source (parsing the unrolled register tiles is
/// a large part of a pipeline's cost).
#[derive(Default)]
pub(crate) struct PipelineCache {
    map: Mutex<HashMap<Key, Arc<wgpu::ComputePipeline>>>,
    modules: Mutex<HashMap<ModuleKey, Arc<wgpu::ShaderModule>>>,
}

impl PipelineCache {
    /// The pipeline for this key, compiled on first use inside a validation error scope so a bad
    /// shader is an [`Error::Shader`] naming it. `LONGSEQ_DUMP_WGSL=DIR` writes each specialised
    /// source to DIR for debugging.
    pub(crate) fn get(
        &self,
        ctx: &Context,
        shader: &'static str,
        entry: &'static str,
        storage: Storage,
        constants: &[(&'static str, u32)],
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        let key = Key {
            shader,
            entry,
            storage,
            constants: constants.to_vec(),
        };
        if let Some(p) = self.map.lock().unwrap().get(&key) {
            return Ok(p.clone());
        }
        let src = source(shader).ok_or_else(|| Error::Shader {
            shader: shader.into(),
            entry: entry.into(),
            message: "no such shader".into(),
            source: None,
        })?;
        let (code, substituted, overrides) = substitute_consts(src, constants);
        let mkey = (shader, storage, substituted);
        let cached = self.modules.lock().unwrap().get(&mkey).cloned();
        let module = match cached {
            Some(m) => m,
            None => {
                let code = crate::unroll::expand(&code).map_err(|message| Error::Shader {
                    shader: shader.into(),
                    entry: entry.into(),
                    message,
                    source: None,
                })?;
                let code = specialise(&code, storage);
                if let Ok(dir) = std::env::var("LONGSEQ_DUMP_WGSL") {
                    let _ = std::fs::write(format!("{dir}/{shader}.{storage:?}.wgsl"), &code);
                }
                let m = Arc::new(create_module(ctx, shader, entry, code)?);
                self.modules.lock().unwrap().insert(mkey, m.clone());
                m
            }
        };
        let pipeline = compile_module(ctx, shader, entry, &module, &overrides)?;
        let p = Arc::new(pipeline);
        self.map.lock().unwrap().insert(key, p.clone());
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn const_sizes_are_substituted_and_the_rest_are_overrides() {
        let src = "const TR: u32 = 16u;\nconst TRX: u32 = 3u;\noverride WG: u32 = 64u;\n";
        let (code, subst, over) = substitute_consts(src, &[("TR", 4), ("WG", 32)]);
        assert_eq!(subst, vec![("TR", 4)]);
        assert_eq!(
            code,
            "const TR: u32 = 4u;\nconst TRX: u32 = 3u;\noverride WG: u32 = 64u;\n"
        );
        assert_eq!(over, vec![("WG", 32)]);
    }

    #[test]
    fn accessors_follow_the_storage_mode() {
        let src = "@group(0) @binding(1) var<storage, read> x: array<ST>;\n\
                   @group(0) @binding(2) var<storage, read_write> y: array<OT>;\n\
                   @group(0) @binding(3) var<storage, read> x4: array<ST4>;\n";
        let packed = specialise(src, Storage::F16Packed);
        assert!(packed
            .contains("fn ld_x(i: u32) -> f32 { return unpack2x16float(x[i >> 1u])[i & 1u]; }"));
        assert!(packed.contains("alias ST4 = vec2<u32>;"));
        assert!(packed.contains("unpack2x16float(w.x), unpack2x16float(w.y)"));
        assert!(specialise(src, Storage::F32)
            .contains("fn ld4_x4(i: u32) -> vec4<f32> { return vec4<f32>(x4[i]); }"));
        assert!(packed.contains("alias OT = f32;"));
        let native = specialise(src, Storage::F16);
        assert!(native.starts_with("enable f16;"));
        assert!(native.contains("fn st_y(i: u32, x: f32) { y[i] = OT(x); }"));
    }

    #[test]
    fn a_shader_that_fails_to_compile_is_an_error_naming_it() {
        let ctx = match Context::new() {
            Ok(c) => c,
            Err(e) => panic!("needs an adapter (apt-get install mesa-vulkan-drivers): {e}"),
        };
        let bad = "@compute @workgroup_size(1) fn main() { let x: u32 = 1.5; }".to_string();
        match compile(&ctx, "broken_shader", "main", bad, &[]) {
            Err(Error::Shader {
                shader,
                entry,
                message,
                source,
            }) => {
                assert!(source.is_some(), "wgpu's error is kept as the source");
                assert_eq!((shader.as_str(), entry.as_str()), ("broken_shader", "main"));
                assert!(!message.is_empty());
            }
            other => panic!("expected Error::Shader, got {:?}", other.err()),
        }
        let missing = ctx
            .pipelines
            .get(&ctx, "no_such_shader", "main", Storage::F32, &[]);
        assert!(matches!(missing, Err(Error::Shader { .. })));
    }
}
