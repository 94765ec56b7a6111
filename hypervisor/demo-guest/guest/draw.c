#include "draw.h"
#include "font.h"
#include "layout.h"

struct screen screen;

#define CELL (8 * FONT_SCALE)

void fill_rect(int x, int y, int w, int h, uint32_t color)
{
    int x1 = x + w, y1 = y + h;
    if (x < 0) x = 0;
    if (y < 0) y = 0;
    if (x1 > (int)screen.width) x1 = (int)screen.width;
    if (y1 > (int)screen.height) y1 = (int)screen.height;
    for (int row = y; row < y1; row++) {
        volatile uint32_t *p = screen.fb + (unsigned)row * screen.width;
        for (int col = x; col < x1; col++)
            p[col] = color;
    }
}

int draw_char(int x, int y, char c, uint32_t fg, uint32_t bg)
{
    const unsigned char *glyph = font8x8[(unsigned char)c & 0x7f];
    for (int gy = 0; gy < 8; gy++)
        for (int gx = 0; gx < 8; gx++) {
            int on = (glyph[gy] >> gx) & 1;
            if (on || bg != TRANSPARENT)
                fill_rect(x + gx * FONT_SCALE, y + gy * FONT_SCALE, FONT_SCALE, FONT_SCALE,
                          on ? fg : bg);
        }
    return x + CELL;
}

int draw_text(int x, int y, const char *s, uint32_t fg, uint32_t bg)
{
    while (*s)
        x = draw_char(x, y, *s++, fg, bg);
    return x;
}

int text_width(unsigned n) { return (int)(n * CELL); }

/* 'X' outline, 'o' fill, ' ' transparent. */
static const char *const ARROW[] = {
    "X           ", "XX          ", "XoX         ", "XooX        ", "XoooX       ",
    "XooooX      ", "XoooooX     ", "XooooooX    ", "XoooooooX   ", "XooooooooX  ",
    "XoooooooooX ", "XooooooXXXXX", "XoooXooX    ", "XooXXooX    ", "XoX  XooX   ",
    "XX   XooX   ", "X     XooX  ", "      XooX  ", "       XX   ",
};
#define ARROW_W 12
#define ARROW_H 19

static uint32_t under[ARROW_H][ARROW_W];
static int shown, px, py;

void pointer_show(int x, int y)
{
    if (shown)
        pointer_hide();
    px = x;
    py = y;
    for (int r = 0; r < ARROW_H; r++)
        for (int c = 0; c < ARROW_W; c++) {
            unsigned sx = (unsigned)(x + c), sy = (unsigned)(y + r);
            if (sx >= screen.width || sy >= screen.height)
                continue;
            volatile uint32_t *p = screen.fb + sy * screen.width + sx;
            under[r][c] = *p;
            if (ARROW[r][c] == 'X')
                *p = 0x000000;
            else if (ARROW[r][c] == 'o')
                *p = 0xffffff;
        }
    shown = 1;
}

void pointer_hide(void)
{
    if (!shown)
        return;
    for (int r = 0; r < ARROW_H; r++)
        for (int c = 0; c < ARROW_W; c++) {
            unsigned sx = (unsigned)(px + c), sy = (unsigned)(py + r);
            if (sx < screen.width && sy < screen.height)
                screen.fb[sy * screen.width + sx] = under[r][c];
        }
    shown = 0;
}
