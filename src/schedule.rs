//! Recording dispatches into one encoder: grid folding, binding ranges, one submit per chain.

use wgpu::util::DeviceExt;

use crate::bind::Bind;
use crate::{Context, Error, Result};

/// Splits `rows` independent rows (e.g. (batch, head) pairs) into passes so that each binding,
/// holding `bytes_per_row[i]` bytes per row plus alignment slack, fits the storage-binding limit.
/// Returns the number of rows per pass.
pub(crate) fn rows_per_pass(
    ctx: &Context,
    op: &'static str,
    bytes_per_row: &[(&str, u64)],
    rows: usize,
) -> Result<usize> {
    let limit = ctx.limits().max_storage_buffer_binding_size;
    let slack = ctx.limits().min_storage_buffer_offset_alignment as u64 + 4;
    let mut per = rows.max(1) as u64;
    for &(what, b) in bytes_per_row {
        if b + slack > limit {
            return Err(Error::TooLarge {
                op,
                what: format!("one row of `{what}`"),
                needed: b + slack,
                limit,
            });
        }
        per = per.min((limit - slack) / b.max(1));
    }
    // Keep every in-shader index inside u32.
    for &(_, b) in bytes_per_row {
        per = per.min((u32::MAX as u64 / b.max(1)).max(1));
    }
    Ok(per.max(1) as usize)
}

/// Workgroup grid for `n` workgroups, folded into y and z past the per-dimension limit. Shaders
/// recover the linear index as `wg.x + nwg.x * (wg.y + nwg.y * wg.z)` and skip indices >= n.
pub(crate) fn fold_grid(ctx: &Context, n: u64) -> Result<[u32; 3]> {
    let m = ctx.limits().max_compute_workgroups_per_dimension as u64;
    fold(n.max(1), m).ok_or_else(|| Error::TooLarge {
        op: "dispatch",
        what: format!("{n} workgroups"),
        needed: n,
        limit: m * m * m,
    })
}

/// `n >= 1` workgroups as x·y·z with each side <= `m`; None past m³.
fn fold(n: u64, m: u64) -> Option<[u32; 3]> {
    if n > m * m * m {
        return None;
    }
    let x = n.min(m);
    let rest = n.div_ceil(x);
    let y = rest.min(m);
    let z = rest.div_ceil(y);
    Some([x as u32, y as u32, z as u32])
}

/// Records an op, or a chain of ops, into one command encoder; [`Schedule::submit`] sends it all
/// in one queue submission.
pub struct Schedule<'a> {
    ctx: &'a Context,
    encoder: wgpu::CommandEncoder,
    /// The schedule submits its own encoder (not an application's): pass timing may split it.
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    owned: bool,
}

impl<'a> Schedule<'a> {
    /// An empty schedule on a new command encoder of `ctx`'s device.
    pub fn new(ctx: &'a Context) -> Self {
        let encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("longseq schedule"),
            });
        Self {
            ctx,
            encoder,
            owned: true,
        }
    }

    /// Records into an application's own encoder (made on `ctx`'s device), so longseq ops join
    /// the application's command stream; [`Schedule::into_encoder`] hands it back unsubmitted.
    /// Internal buffers (parameters, scratch) stay alive as long as the commands need them.
    pub fn from_encoder(ctx: &'a Context, encoder: wgpu::CommandEncoder) -> Self {
        Self {
            ctx,
            encoder,
            owned: false,
        }
    }

    /// The encoder with everything recorded so far, for the application to submit.
    pub fn into_encoder(self) -> wgpu::CommandEncoder {
        self.encoder
    }

    /// The context the schedule records for.
    pub fn context(&self) -> &'a Context {
        self.ctx
    }

    /// Records one dispatch of `workgroups` workgroups (folded as needed). `params` is bound as a
    /// uniform at slot 0; `binds` fill the other slots the entry point uses.
    pub(crate) fn dispatch<P: bytemuck::Pod>(
        &mut self,
        pipeline: &wgpu::ComputePipeline,
        params: &P,
        binds: &[Bind<'_>],
        workgroups: u64,
    ) -> Result<()> {
        let grid = fold_grid(self.ctx, workgroups)?;
        let bg = self.bind_group(pipeline, params, binds);
        // One pass per dispatch: passes are ordered, so a later dispatch sees earlier writes.
        let mut pass = self
            .encoder
            .begin_compute_pass(&wgpu::ComputePassDescriptor::default());
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, &bg, &[]);
        pass.dispatch_workgroups(grid[0], grid[1], grid[2]);
        Ok(())
    }

    /// Records one dispatch whose grid (three u32: x, y, z workgroups) an earlier dispatch wrote
    /// to `args` (usage `INDIRECT`): work that runs only when the device found it needed.
    pub(crate) fn dispatch_indirect<P: bytemuck::Pod>(
        &mut self,
        pipeline: &wgpu::ComputePipeline,
        params: &P,
        binds: &[Bind<'_>],
        args: &wgpu::Buffer,
    ) {
        let bg = self.bind_group(pipeline, params, binds);
        let mut pass = self
            .encoder
            .begin_compute_pass(&wgpu::ComputePassDescriptor::default());
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, &bg, &[]);
        pass.dispatch_workgroups_indirect(args, 0);
    }

    /// `params` as a uniform at slot 0 and `binds` at their slots.
    fn bind_group<P: bytemuck::Pod>(
        &self,
        pipeline: &wgpu::ComputePipeline,
        params: &P,
        binds: &[Bind<'_>],
    ) -> wgpu::BindGroup {
        let dev = &self.ctx.device;
        let ubuf = dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("longseq params"),
            contents: bytemuck::bytes_of(params),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: ubuf.as_entire_binding(),
        }];
        for b in binds {
            entries.push(wgpu::BindGroupEntry {
                binding: b.slot,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: b.buffer,
                    offset: b.offset,
                    size: wgpu::BufferSize::new(b.size),
                }),
            });
        }
        dev.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        })
    }

    /// Records zeroing a whole buffer (it needs `COPY_DST`).
    pub(crate) fn clear(&mut self, buffer: &wgpu::Buffer) {
        self.encoder.clear_buffer(buffer, 0, None);
    }

    /// Records copying `size` bytes from byte `from` of `src` to byte `to` of `dst` (`COPY_SRC`
    /// and `COPY_DST` usage, as every tensor has; offsets and size multiples of 4).
    pub(crate) fn copy(
        &mut self,
        src: &wgpu::Buffer,
        from: u64,
        dst: &wgpu::Buffer,
        to: u64,
        size: u64,
    ) {
        if size > 0 {
            self.encoder.copy_buffer_to_buffer(src, from, dst, to, size);
        }
    }

    /// With [`crate::profile`] on (and the schedule's own encoder), submits what is recorded so
    /// far, waits, and adds the wall time to pass `name`; otherwise nothing.
    pub(crate) fn mark(&mut self, name: &'static str) {
        #[cfg(not(target_arch = "wasm32"))]
        if self.owned && crate::profile::enabled() {
            let fresh = Schedule::new(self.ctx).encoder;
            let done = std::mem::replace(&mut self.encoder, fresh);
            let (t, cpu) = (std::time::Instant::now(), crate::profile::cpu_time());
            self.ctx.queue.submit([done.finish()]);
            if self.ctx.wait().is_ok() {
                let used = crate::profile::cpu_time().saturating_sub(cpu);
                crate::profile::add(name, t.elapsed(), used);
            }
        }
        #[cfg(target_arch = "wasm32")]
        let _ = name;
    }

    /// Sends everything recorded in one submission. Does not wait; reading a tensor back or
    /// [`Context::wait`] does.
    pub fn submit(self) -> wgpu::SubmissionIndex {
        self.ctx.queue.submit([self.encoder.finish()])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn grids_fold_into_y_and_z_and_cover_every_workgroup() {
        let m = 65_535u64;
        for n in [
            1,
            2,
            65_535,
            65_536,
            70_000,
            65_535 * 65_535 + 1,
            5_000_000_000,
        ] {
            let g = super::fold(n, m).unwrap().map(u64::from);
            assert!(g.iter().all(|&d| (1..=m).contains(&d)), "{n}: {g:?}");
            let cover = g[0] * g[1] * g[2];
            assert!(cover >= n && cover - n < g[0] * g[1], "{n}: {g:?}");
        }
        assert!(super::fold(m * m * m + 1, m).is_none());
    }
}
