/* Tessera's demo desktop (CPL 3; kernel.c prepared the machine): programs the bochs display, paints a title bar with the desktop's
 * name (from the command line: name=...) and a clock (the CMOS RTC), a notes window that shows
 * what is typed, and the pointer from the virtio tablet or the PS/2 mouse. Typed characters
 * and clicks are also written to the serial console, for tests and for the curious.
 *
 * A byte received on the serial port repaints the probe square (bottom right) in the byte's
 * colour, then is echoed back: the display latency benchmark's stimulus (xtask
 * bench-display-latency).
 *
 * Command line: name=NAME (up to 40 characters) mode=WIDTHxHEIGHT (default 1024x768). */
#include "hw.h"
#include "draw.h"
#include "input.h"
#include "kernel.h"
#include "layout.h"

#define ZERO_PAGE_CMDLINE_PTR 0x228
#define CMDLINE_MAX 4096
#define NAME_MAX 40

static char name[NAME_MAX + 1] = "demo desktop";
static unsigned mode_w = DEFAULT_WIDTH, mode_h = DEFAULT_HEIGHT;

/* ---- command line ---- */

static int starts_with(const char *s, const char *prefix)
{
    while (*prefix)
        if (*s++ != *prefix++)
            return 0;
    return 1;
}

static unsigned parse_uint(const char **s)
{
    unsigned v = 0;
    while (**s >= '0' && **s <= '9' && v < 100000)
        v = v * 10 + (unsigned)(*(*s)++ - '0');
    return v;
}

static void parse_cmdline(const uint8_t *zero_page)
{
    uint32_t at = *(const uint32_t *)(zero_page + ZERO_PAGE_CMDLINE_PTR);
    if (!at)
        return;
    const char *s = (const char *)(uint64_t)at, *end = s + CMDLINE_MAX;
    while (s < end && *s) {
        while (*s == ' ')
            s++;
        if (starts_with(s, "name=")) {
            s += 5;
            int n = 0;
            while (*s && *s != ' ' && n < NAME_MAX)
                name[n++] = (*s >= 0x20 && *s < 0x7f) ? *s : '?', s++;
            name[n] = 0;
        } else if (starts_with(s, "mode=")) {
            s += 5;
            unsigned w = parse_uint(&s), h = (*s == 'x' ? s++, parse_uint(&s) : 0);
            if (w >= 320 && w <= 2560 && h >= 200 && h <= 1600) {
                mode_w = w & ~7u;
                mode_h = h;
            }
        }
        while (*s && *s != ' ')
            s++;
    }
}

/* ---- display ---- */

static void dispi(uint16_t index, uint16_t value)
{
    outw(0x1ce, index);
    outw(0x1cf, value);
}

static int display_init(void)
{
    int dev = pci_find(0x1234, 0x1111);
    if (dev < 0)
        return 0;
    pci_enable((unsigned)dev);
    dispi(4, 0);                      /* disable while changing the mode */
    dispi(1, (uint16_t)mode_w);       /* x resolution */
    dispi(2, (uint16_t)mode_h);       /* y resolution */
    dispi(3, 32);                     /* bits per pixel */
    dispi(8, 0);                      /* x offset */
    dispi(9, 0);                      /* y offset */
    dispi(4, 0x41);                   /* enabled, linear framebuffer */
    screen.fb = (volatile uint32_t *)pci_bar((unsigned)dev, 0);
    screen.width = mode_w;
    screen.height = mode_h;
    return screen.fb != 0;
}

/* ---- clock (CMOS RTC) ---- */

struct time { unsigned year, month, day, hour, minute, second; };

static uint8_t cmos(uint8_t reg)
{
    outb(0x70, reg);
    return inb(0x71);
}

static unsigned from_bcd(uint8_t v, int bcd) { return bcd ? (v >> 4) * 10u + (v & 15u) : v; }

static struct time rtc_read(void)
{
    uint8_t b = cmos(0x0b);
    int bcd = !(b & 0x04);
    struct time t;
    uint8_t hour = cmos(0x04);
    t.second = from_bcd(cmos(0x00), bcd);
    t.minute = from_bcd(cmos(0x02), bcd);
    t.hour = from_bcd(hour & 0x7f, bcd);
    if (!(b & 0x02) && (hour & 0x80)) /* 12-hour mode, PM */
        t.hour = (t.hour % 12) + 12;
    t.day = from_bcd(cmos(0x07), bcd);
    t.month = from_bcd(cmos(0x08), bcd);
    t.year = from_bcd(cmos(0x32), bcd) * 100 + from_bcd(cmos(0x09), bcd);
    return t;
}

static char *put2(char *p, unsigned v)
{
    *p++ = (char)('0' + v / 10 % 10);
    *p++ = (char)('0' + v % 10);
    return p;
}

/* "YYYY-MM-DD HH:MM:SS" */
static void format_time(const struct time *t, char *out)
{
    char *p = put2(put2(out, t->year / 100), t->year % 100);
    *p++ = '-';
    p = put2(p, t->month);
    *p++ = '-';
    p = put2(p, t->day);
    *p++ = ' ';
    p = put2(p, t->hour);
    *p++ = ':';
    p = put2(p, t->minute);
    *p++ = ':';
    p = put2(p, t->second);
    *p = 0;
}

/* ---- the desktop ---- */

#define CLOCK_CHARS 19
#define CELL (8 * FONT_SCALE)
#define TEXT_COLS ((mode_w - 2 * NOTES_X - 2 * NOTES_PAD) / CELL)
#define TEXT_ROWS ((mode_h - NOTES_Y - 64 - NOTES_HEADER - 2 * NOTES_PAD) / LINE_HEIGHT)

static unsigned cur_col, cur_row;

static uint32_t shade(unsigned row)
{
    uint32_t out = 0;
    for (int shift = 0; shift <= 16; shift += 8) {
        unsigned a = (DESKTOP_TOP >> shift) & 0xff, b = (DESKTOP_BOTTOM >> shift) & 0xff;
        unsigned v = (a * (mode_h - row) + b * row) / mode_h;
        out |= v << shift;
    }
    return out;
}

static void draw_clock(const struct time *t)
{
    char text[CLOCK_CHARS + 1];
    format_time(t, text);
    draw_text((int)mode_w - text_width(CLOCK_CHARS) - 12, (TITLE_HEIGHT - CELL) / 2, text,
              TITLE_FG, TITLE_BG);
}

static void notes_body(void)
{
    fill_rect(NOTES_X, NOTES_Y + NOTES_HEADER, (int)(mode_w - 2 * NOTES_X),
              (int)(mode_h - NOTES_Y - 64 - NOTES_HEADER), NOTES_BG);
}

static void paint_desktop(int tablet)
{
    for (unsigned row = TITLE_HEIGHT; row < mode_h; row++)
        fill_rect(0, (int)row, (int)mode_w, 1, shade(row));
    fill_rect(0, 0, (int)mode_w, TITLE_HEIGHT, TITLE_BG);
    int x = draw_text(12, (TITLE_HEIGHT - CELL) / 2, "Tessera", TITLE_FG, TITLE_BG);
    x = draw_text(x, (TITLE_HEIGHT - CELL) / 2, " | ", TITLE_FG, TITLE_BG);
    draw_text(x, (TITLE_HEIGHT - CELL) / 2, name, TITLE_FG, TITLE_BG);
    fill_rect(NOTES_X - 1, NOTES_Y - 1, (int)(mode_w - 2 * NOTES_X) + 2,
              (int)(mode_h - NOTES_Y - 64) + 2, 0x000a1a24);
    fill_rect(NOTES_X, NOTES_Y, (int)(mode_w - 2 * NOTES_X), NOTES_HEADER, NOTES_HEADER_BG);
    draw_text(NOTES_X + NOTES_PAD, NOTES_Y + (NOTES_HEADER - CELL) / 2, "Notes - type here",
              TEXT_FG, NOTES_HEADER_BG);
    notes_body();
    draw_text(NOTES_X, (int)mode_h - 44,
              tablet ? "Demo desktop: no OS, pointer from the virtio tablet"
                     : "Demo desktop: no OS, pointer from the PS/2 mouse",
              TITLE_FG, TRANSPARENT);
}

static void text_cursor(uint32_t color)
{
    fill_rect((int)(TEXT_X + cur_col * CELL), (int)(TEXT_Y + cur_row * LINE_HEIGHT + CELL), CELL,
              2, color);
}

static void type_char(char c)
{
    text_cursor(NOTES_BG);
    if (c == '\b') {
        if (cur_col > 0 || cur_row > 0) {
            cur_col = cur_col > 0 ? cur_col - 1 : TEXT_COLS - 1;
            cur_row -= cur_col == TEXT_COLS - 1 ? 1 : 0;
            draw_char((int)(TEXT_X + cur_col * CELL), (int)(TEXT_Y + cur_row * LINE_HEIGHT), ' ',
                      TEXT_FG, NOTES_BG);
        }
    } else if (c == '\n') {
        cur_col = 0;
        cur_row++;
    } else if (c >= 0x20 && c < 0x7f) {
        draw_char((int)(TEXT_X + cur_col * CELL), (int)(TEXT_Y + cur_row * LINE_HEIGHT), c,
                  TEXT_FG, NOTES_BG);
        if (++cur_col == TEXT_COLS) {
            cur_col = 0;
            cur_row++;
        }
    }
    if (cur_row >= TEXT_ROWS) { /* full: start a fresh page */
        notes_body();
        cur_row = 0;
        cur_col = 0;
    }
    text_cursor(TEXT_FG);
}

/* ---- the latency probe ---- */

/* The probe colour of a byte: injective, so the benchmark knows which byte a frame shows
 * (mirrored by probe_color() in the crate). */
static uint32_t probe_color(uint8_t b)
{
    return (uint32_t)b << 16 | (uint32_t)(255 - b) << 8 | 0x40;
}

static void serial_probe(void)
{
    for (int i = 0; i < 16 && (inb(COM1 + 5) & 0x01); i++) {
        uint8_t b = inb(COM1);
        fill_rect((int)(mode_w - PROBE_SIZE), (int)(mode_h - PROBE_SIZE), PROBE_SIZE, PROBE_SIZE,
                  probe_color(b));
        serial_putc((char)b);
    }
}

/* ---- main ---- */

static void report_click(const struct pointer_state *p)
{
    serial_puts("\nclick ");
    serial_putu((unsigned)p->x);
    serial_putc(' ');
    serial_putu((unsigned)p->y);
    serial_putc('\n');
}

void demo_main(const uint8_t *zero_page)
{
    parse_cmdline(zero_page);
    if (!display_init()) {
        serial_puts("tessera-demo: no bochs display (1234:1111); nothing to show\n");
        return;
    }
    int tablet = tablet_init();
    ps2_init();
    paint_desktop(tablet);
    struct time now = rtc_read();
    draw_clock(&now);
    text_cursor(TEXT_FG);
    struct pointer_state ptr = {(int)mode_w / 2, (int)mode_h / 2, 0, 0, 0};
    pointer_show(ptr.x, ptr.y);
    serial_puts("tessera-demo: ");
    serial_putu(mode_w);
    serial_putc('x');
    serial_putu(mode_h);
    serial_puts(tablet ? " tablet" : " ps2-mouse");
    serial_puts(" name=");
    serial_puts(name);
    serial_puts("\n");
    for (;;) {
        char keys[32];
        int n = ps2_poll(keys, (int)sizeof keys, &ptr);
        tablet_poll(&ptr);
        struct time t = rtc_read();
        int tick = t.second != now.second;
        int probe = inb(COM1 + 5) & 0x01;
        int redraw = n || tick || ptr.moved || probe;
        if (redraw)
            pointer_hide();
        if (probe)
            serial_probe();
        for (int i = 0; i < n; i++) {
            if (keys[i] == KEY_CTRL_ALT_DEL) {
                serial_puts("\n[ctrl-alt-del]\n");
                continue;
            }
            type_char(keys[i]);
            serial_putc(keys[i]);
        }
        if (tick) {
            now = t;
            draw_clock(&now);
        }
        if (redraw)
            pointer_show(ptr.x, ptr.y);
        ptr.moved = 0;
        if (ptr.clicked) {
            report_click(&ptr);
            ptr.clicked = 0;
        }
        sleep_until_interrupt();
    }
}
