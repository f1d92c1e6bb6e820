//! The adapter's register-FMA rate: the ceiling for any kernel here. Each invocation runs `ITERS`
//! rounds of `--acc` independent vec4 FMAs on registers (no memory in the loop) and writes one
//! value so the work stays live; GFLOP/s = 2 · 4 · acc · ITERS · invocations / time (median of 5
//! after a warm-up, device waited on). Few accumulators stay in registers; many spill (on
//! lavapipe an invocation is one SIMD lane, so a vec4 per invocation takes 4 vector registers).
//!
//! `cargo run --example fma_peak -- [--groups N] [--acc A]`

use std::time::Instant;

use longseq::wgpu;
use longseq::Context;

const ITERS: u32 = 4096;
const WG: u32 = 64;

const SRC: &str = r#"
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    var a: array<vec4<f32>, ACC>;
    let s = f32(id.x) * 1e-9;
    for (var i = 0u; i < ACCu; i++) {
        a[i] = vec4<f32>(s + f32(i));
    }
    let m = vec4<f32>(0.9999);
    let c = vec4<f32>(1e-4);
    for (var t = 0u; t < ITERSu; t++) {
        for (var i = 0u; i < ACCu; i++) {
            a[i] = fma(a[i], m, c);
        }
    }
    var r = vec4<f32>(0.0);
    for (var i = 0u; i < ACCu; i++) {
        r += a[i];
    }
    out[id.x] = r.x + r.y + r.z + r.w;
}
"#;

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (mut groups, mut acc) = (64u32, 4u32);
    for kv in argv.chunks(2) {
        match kv {
            [k, v] if k == "--groups" => groups = v.parse().expect("--groups N"),
            [k, v] if k == "--acc" => acc = v.parse().expect("--acc A"),
            _ => {
                eprintln!("usage: fma_peak [--groups N] [--acc A]");
                std::process::exit(2)
            }
        }
    }
    let ctx = Context::new().expect("fma_peak needs a GPU adapter");
    eprintln!("adapter: {}", ctx.adapter_line());
    let dev = ctx.device();
    let module = dev.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("fma_peak"),
        source: wgpu::ShaderSource::Wgsl(
            SRC.replace("ITERS", &ITERS.to_string())
                .replace("ACC", &acc.to_string())
                .into(),
        ),
    });
    let pipeline = dev.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("fma_peak"),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let n = (groups * WG) as u64;
    let buf = dev.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: n * 4,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let bg = dev.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[wgpu::BindGroupEntry {
            binding: 0,
            resource: buf.as_entire_binding(),
        }],
    });
    let run = || {
        let mut enc = dev.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bg, &[]);
            pass.dispatch_workgroups(groups, 1, 1);
        }
        ctx.queue().submit([enc.finish()]);
        ctx.wait().unwrap();
    };
    run();
    let mut t: Vec<f64> = (0..5)
        .map(|_| {
            let s = Instant::now();
            run();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    let flop = 2.0 * 4.0 * acc as f64 * ITERS as f64 * n as f64;
    println!(
        "fma_peak: {n} invocations x {ITERS} x {acc} vec4 FMA: {:.1} ms, {:.2} GFLOP/s",
        t[2] * 1e3,
        flop / t[2] / 1e9
    );
}
