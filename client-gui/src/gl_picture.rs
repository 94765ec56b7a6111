//! The desktop's picture on the GPU, drawn without egui's mesh pipeline.
//!
//! egui draws an image as a textured, alpha-blended mesh. Under software GL (llvmpipe, which
//! is what a thin client without a GPU driver and every test here runs on) that fragment
//! shader ran for every pixel of the picture on every frame and was most of the client's CPU
//! (BENCHMARKS.md). Here the picture lives in a texture in the window's own pixel layout
//! (bytes B, G, R, A, which the client's frame already holds: uploads convert nothing) and
//! reaches the window by a framebuffer blit with no blending, which llvmpipe does as a memory
//! copy when the picture is shown 1:1. The texture's rows are stored top row first, as the
//! frame's are; GL counts rows from the bottom, so the blit flips in GL's terms, and since
//! Mesa keeps window buffers top row first (and textures bottom row first) that flip cancels
//! Mesa's own: underneath, rows are copied as they lie. (Uploading rows bottom-up and blitting
//! unflipped made Mesa flip, and a flip is never a copy: it cost as much as egui's mesh.)
//!
//! This is the client's one module of `unsafe`: GL calls are foreign calls.

use std::sync::{Arc, Mutex, PoisonError};

use eframe::egui_glow;
use eframe::glow::{self, HasContext};
use tessera_spice_client::{Frame, Rect};

/// Rectangles remembered between paints before the next paint uploads the whole frame.
const MAX_DIRTY: usize = 512;

/// The picture's texture and the framebuffer that reads from it, freed with the picture (on
/// the UI thread, where eframe keeps its context current).
struct Gpu {
    gl: Arc<glow::Context>,
    texture: glow::Texture,
    fbo: glow::Framebuffer,
    size: [u32; 2],
}

impl Drop for Gpu {
    fn drop(&mut self) {
        // SAFETY: both objects were created on this context and nothing uses them after this.
        unsafe {
            self.gl.delete_framebuffer(self.fbo);
            self.gl.delete_texture(self.texture);
        }
    }
}

#[derive(Default)]
struct State {
    gpu: Option<Gpu>,
    /// Rectangles changed since the last paint.
    dirty: Vec<Rect>,
    /// The whole frame must be uploaded (new surface, or nothing uploaded yet).
    full: bool,
    /// Reused upload buffer.
    staging: Vec<u32>,
    /// A texture could not be made (said once, not every frame).
    failed: bool,
}

/// Shared between the UI thread, which reports changes, and the paint callback, which
/// uploads them and draws (both run on the UI thread; the lock only satisfies egui's
/// `Send + Sync` callback bound).
#[derive(Clone)]
pub struct GlPicture {
    frame: Arc<Mutex<Frame>>,
    state: Arc<Mutex<State>>,
}

impl GlPicture {
    /// A picture of `frame`, uploaded whole at the first paint.
    pub fn new(frame: Arc<Mutex<Frame>>) -> Self {
        let state = State {
            full: true,
            ..State::default()
        };
        Self {
            frame,
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// The frame has a new surface: upload all of it.
    pub fn replaced(&self) {
        let mut s = self.lock();
        s.full = true;
        s.dirty.clear();
    }

    /// `rect` of the frame changed.
    pub fn changed(&self, rect: Rect) {
        let mut s = self.lock();
        if s.full {
            return;
        }
        // A window that is not painted (minimised) must not pile up rectangles: past this
        // many, one whole upload is cheaper anyway.
        if s.dirty.len() >= MAX_DIRTY {
            s.full = true;
            s.dirty.clear();
        } else {
            s.dirty.push(rect);
        }
    }

    /// The egui shape that draws the picture into `rect`.
    pub fn shape(&self, rect: egui::Rect) -> egui::Shape {
        let me = self.clone();
        egui::Shape::Callback(egui::PaintCallback {
            rect,
            callback: Arc::new(egui_glow::CallbackFn::new(move |info, painter| {
                me.paint(&info, painter)
            })),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn paint(&self, info: &egui::PaintCallbackInfo, painter: &egui_glow::Painter) {
        let gl = painter.gl();
        let mut s = self.lock();
        let frame = self.frame.lock().unwrap_or_else(PoisonError::into_inner);
        let size = [frame.width, frame.height];
        if size[0] == 0 || size[1] == 0 || frame.pixels.len() < size[0] as usize * size[1] as usize
        {
            return;
        }
        let state = &mut *s;
        if state.gpu.as_ref().map(|g| g.size) != Some(size) {
            state.gpu = None;
            match create(gl, size) {
                Ok(g) => state.gpu = Some(g),
                Err(e) => {
                    if !std::mem::replace(&mut state.failed, true) {
                        tracing::error!("cannot create the desktop's texture: {e}");
                    }
                    return;
                }
            }
            state.full = true;
        }
        let Some(gpu) = &state.gpu else { return };
        let whole = Rect {
            x: 0,
            y: 0,
            width: size[0],
            height: size[1],
        };
        let rects = if state.full {
            std::slice::from_ref(&whole)
        } else {
            &state.dirty[..]
        };
        for r in rects {
            let outside =
                |at: u32, len: u32, max: u32| u64::from(at) + u64::from(len) > u64::from(max);
            if r.width == 0
                || r.height == 0
                || outside(r.x, r.width, size[0])
                || outside(r.y, r.height, size[1])
            {
                continue;
            }
            opaque_rows(&frame, *r, &mut state.staging);
            upload(gl, gpu, *r, &state.staging);
        }
        state.full = false;
        state.dirty.clear();
        drop(frame);
        blit(gl, gpu, info, painter.intermediate_fbo());
    }
}

/// `r` of `frame`, packed, alpha opaque (the frame's fourth byte is unused, and a window with
/// an alpha channel would show through).
fn opaque_rows(frame: &Frame, r: Rect, out: &mut Vec<u32>) {
    out.clear();
    out.reserve(r.width as usize * r.height as usize);
    for row in r.y..r.y + r.height {
        let start = row as usize * frame.width as usize + r.x as usize;
        out.extend(
            frame.pixels[start..start + r.width as usize]
                .iter()
                .map(|p| p | 0xFF00_0000),
        );
    }
}

fn create(gl: &Arc<glow::Context>, [w, h]: [u32; 2]) -> Result<Gpu, String> {
    // SAFETY: plain GL calls on the current context (egui_glow calls us with it current);
    // the texture is allocated without data (PixelUnpackData::Slice(None)), the framebuffer
    // binding is restored to egui's before returning.
    unsafe {
        let texture = gl.create_texture()?;
        gl.bind_texture(glow::TEXTURE_2D, Some(texture));
        for (p, v) in [
            (glow::TEXTURE_MIN_FILTER, glow::LINEAR),
            (glow::TEXTURE_MAG_FILTER, glow::LINEAR),
            (glow::TEXTURE_WRAP_S, glow::CLAMP_TO_EDGE),
            (glow::TEXTURE_WRAP_T, glow::CLAMP_TO_EDGE),
        ] {
            gl.tex_parameter_i32(glow::TEXTURE_2D, p, v as i32);
        }
        // An unsized RGBA texture given BGRA bytes: Mesa then stores it as B8G8R8A8, the
        // layout of the window, so the blit can be a copy (a sized RGBA8 is stored RGBA, and
        // llvmpipe blitted it through a fragment shader: no saving at all).
        gl.tex_image_2d(
            glow::TEXTURE_2D,
            0,
            glow::RGBA as i32,
            w as i32,
            h as i32,
            0,
            glow::BGRA,
            glow::UNSIGNED_BYTE,
            glow::PixelUnpackData::Slice(None),
        );
        let fbo = match gl.create_framebuffer() {
            Ok(f) => f,
            Err(e) => {
                gl.delete_texture(texture);
                return Err(e);
            }
        };
        let previous = gl.get_parameter_framebuffer(glow::READ_FRAMEBUFFER_BINDING);
        gl.bind_framebuffer(glow::READ_FRAMEBUFFER, Some(fbo));
        gl.framebuffer_texture_2d(
            glow::READ_FRAMEBUFFER,
            glow::COLOR_ATTACHMENT0,
            glow::TEXTURE_2D,
            Some(texture),
            0,
        );
        let status = gl.check_framebuffer_status(glow::READ_FRAMEBUFFER);
        gl.bind_framebuffer(glow::READ_FRAMEBUFFER, previous);
        let gpu = Gpu {
            gl: gl.clone(),
            texture,
            fbo,
            size: [w, h],
        };
        if status != glow::FRAMEBUFFER_COMPLETE {
            return Err(format!("framebuffer incomplete (status {status:#x})"));
        }
        Ok(gpu)
    }
}

/// Uploads `rows` (from `opaque_rows`) into `r`'s place in the texture (texture row = frame
/// row).
fn upload(gl: &glow::Context, gpu: &Gpu, r: Rect, rows: &[u32]) {
    let bytes: &[u8] = bytemuck::cast_slice(rows);
    // SAFETY: `rows` holds r.width x r.height pixels of 4 bytes, packed (row length and skips
    // reset to 0, alignment 4), and r lies inside the texture (checked by the caller against
    // the frame, whose size the texture has).
    unsafe {
        gl.bind_texture(glow::TEXTURE_2D, Some(gpu.texture));
        gl.pixel_store_i32(glow::UNPACK_ALIGNMENT, 4);
        gl.pixel_store_i32(glow::UNPACK_ROW_LENGTH, 0);
        gl.pixel_store_i32(glow::UNPACK_SKIP_PIXELS, 0);
        gl.pixel_store_i32(glow::UNPACK_SKIP_ROWS, 0);
        gl.tex_sub_image_2d(
            glow::TEXTURE_2D,
            0,
            r.x as i32,
            r.y as i32,
            r.width as i32,
            r.height as i32,
            glow::BGRA,
            glow::UNSIGNED_BYTE,
            glow::PixelUnpackData::Slice(Some(bytes)),
        );
    }
}

/// Copies the texture onto the callback's rectangle of egui's framebuffer.
fn blit(
    gl: &glow::Context,
    gpu: &Gpu,
    info: &egui::PaintCallbackInfo,
    target: Option<glow::Framebuffer>,
) {
    let v = info.viewport_in_pixels();
    let c = info.clip_rect_in_pixels();
    // The scissor test makes llvmpipe draw a quad instead of copying: leave it off when the
    // clip holds the whole picture, as it does unless a window covers the desktop's panel.
    let clipped = c.left_px > v.left_px
        || c.from_bottom_px > v.from_bottom_px
        || c.left_px + c.width_px < v.left_px + v.width_px
        || c.from_bottom_px + c.height_px < v.from_bottom_px + v.height_px;
    let same_size = v.width_px == gpu.size[0] as i32 && v.height_px == gpu.size[1] as i32;
    // SAFETY: the read framebuffer is ours and complete, the draw framebuffer is egui's
    // target; the read binding and the scissor test are restored (egui_glow restores the
    // rest of its state after each callback).
    unsafe {
        gl.bind_framebuffer(glow::READ_FRAMEBUFFER, Some(gpu.fbo));
        if !clipped {
            gl.disable(glow::SCISSOR_TEST);
        }
        gl.blit_framebuffer(
            0,
            0,
            gpu.size[0] as i32,
            gpu.size[1] as i32,
            // Flipped: texture row 0 is the picture's top row.
            v.left_px,
            v.from_bottom_px + v.height_px,
            v.left_px + v.width_px,
            v.from_bottom_px,
            glow::COLOR_BUFFER_BIT,
            if same_size {
                glow::NEAREST
            } else {
                glow::LINEAR
            },
        );
        gl.enable(glow::SCISSOR_TEST);
        gl.bind_framebuffer(glow::READ_FRAMEBUFFER, target);
    }
}
