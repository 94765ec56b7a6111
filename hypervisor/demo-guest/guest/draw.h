/* Drawing on the linear framebuffer: rectangles, text from the 8x8 font, the pointer. */
#ifndef DEMO_DRAW_H
#define DEMO_DRAW_H

#include <stdint.h>

struct screen {
    volatile uint32_t *fb;
    unsigned width, height; /* pixels; the stride is the width */
};

extern struct screen screen;

void fill_rect(int x, int y, int w, int h, uint32_t color);
/* As a background colour: draw the glyph's pixels only. */
#define TRANSPARENT 0xff000000u

/* Scaled glyph cells; returns the x after the last character. */
int draw_text(int x, int y, const char *s, uint32_t fg, uint32_t bg);
int draw_char(int x, int y, char c, uint32_t fg, uint32_t bg);
/* Width in pixels of `n` characters. */
int text_width(unsigned n);
/* The pointer: drawn over the picture with what it covers saved, so that hiding it restores
 * the picture. Draw nothing while it is shown: hide, draw, show. */
void pointer_show(int x, int y);
void pointer_hide(void);

#endif
