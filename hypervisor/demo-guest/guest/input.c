/* The i8042 controller: keyboard (set 1 through the controller's translation) and the PS/2
 * mouse (3-byte packets), polled. */
#include "hw.h"
#include "draw.h"
#include "input.h"

#define I8042_DATA 0x60
#define I8042_STATUS 0x64
#define ST_OUT_FULL 0x01
#define ST_AUX 0x20
#define CTR_KBD_INT 0x01
#define CTR_AUX_INT 0x02
#define CTR_SYSTEM 0x04
#define CTR_XLATE 0x40

/* Set-1 make codes 0x00..0x39 to characters (0: not a character). */
static const char PLAIN[0x3a] = {
    0, 27, '1', '2', '3', '4', '5', '6', '7', '8', '9', '0', '-', '=', '\b', '\t',
    'q', 'w', 'e', 'r', 't', 'y', 'u', 'i', 'o', 'p', '[', ']', '\n', 0, 'a', 's',
    'd', 'f', 'g', 'h', 'j', 'k', 'l', ';', '\'', '`', 0, '\\', 'z', 'x', 'c', 'v',
    'b', 'n', 'm', ',', '.', '/', 0, '*', 0, ' ',
};
static const char SHIFTED[0x3a] = {
    0, 27, '!', '@', '#', '$', '%', '^', '&', '*', '(', ')', '_', '+', '\b', '\t',
    'Q', 'W', 'E', 'R', 'T', 'Y', 'U', 'I', 'O', 'P', '{', '}', '\n', 0, 'A', 'S',
    'D', 'F', 'G', 'H', 'J', 'K', 'L', ':', '"', '~', 0, '|', 'Z', 'X', 'C', 'V',
    'B', 'N', 'M', '<', '>', '?', 0, '*', 0, ' ',
};
#define SC_LSHIFT 0x2a
#define SC_RSHIFT 0x36
#define SC_CAPS 0x3a
#define SC_CTRL 0x1d /* E0-prefixed: the right one */
#define SC_ALT 0x38  /* E0-prefixed: the right one */
#define SC_DELETE 0x53 /* E0-prefixed: Delete; plain: the keypad's */

static int shift, caps, extended, ctrl, alt;
static unsigned char packet[3];
static int packet_len;

static void command(uint8_t cmd) { outb(I8042_STATUS, cmd); }
static void data(uint8_t byte) { outb(I8042_DATA, byte); }

void ps2_init(void)
{
    for (int i = 0; i < 64 && (inb(I8042_STATUS) & ST_OUT_FULL); i++)
        (void)inb(I8042_DATA);
    command(0x60);
    data(CTR_KBD_INT | CTR_AUX_INT | CTR_SYSTEM | CTR_XLATE);
    command(0xa8); /* aux port on */
    command(0xd4);
    data(0xf4); /* mouse: enable reporting */
    /* Its acknowledgement (0xFA) would look like a packet's first byte: take it here. */
    for (int i = 0; i < 100000; i++) {
        uint8_t st = inb(I8042_STATUS);
        if ((st & (ST_OUT_FULL | ST_AUX)) == (ST_OUT_FULL | ST_AUX)) {
            (void)inb(I8042_DATA);
            break;
        }
    }
}

static int key(uint8_t code)
{
    if (code == 0xe0) {
        extended = 1;
        return 0;
    }
    int was_extended = extended;
    extended = 0;
    int release = code & 0x80;
    code &= 0x7f;
    /* Either side's Ctrl and Alt, and Delete (either one) with both held: the PC's
     * attention chord. */
    if (code == SC_CTRL) {
        ctrl = !release;
        return 0;
    }
    if (code == SC_ALT) {
        alt = !release;
        return 0;
    }
    if (code == SC_DELETE && !release && ctrl && alt)
        return KEY_CTRL_ALT_DEL;
    if (was_extended) /* arrows and the rest: not characters */
        return 0;
    if (code == SC_LSHIFT || code == SC_RSHIFT) {
        shift = !release;
        return 0;
    }
    if (code == SC_CAPS && !release)
        caps = !caps;
    if (release || code >= sizeof PLAIN)
        return 0;
    char c = shift ? SHIFTED[code] : PLAIN[code];
    if (caps && c >= 'a' && c <= 'z')
        c = (char)(c - 'a' + 'A');
    else if (caps && c >= 'A' && c <= 'Z')
        c = (char)(c - 'A' + 'a');
    return c;
}

static int clamp(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

static void mouse_byte(uint8_t b, struct pointer_state *p)
{
    if (packet_len == 0 && !(b & 0x08)) /* not a packet's first byte: resynchronise */
        return;
    packet[packet_len++] = b;
    if (packet_len < 3)
        return;
    packet_len = 0;
    int dx = packet[1] - ((packet[0] << 4) & 0x100);
    int dy = packet[2] - ((packet[0] << 3) & 0x100);
    unsigned buttons = (packet[0] & 1) | (packet[0] & 2) | (packet[0] & 4);
    p->x = clamp(p->x + dx, 0, (int)screen.width - 1);
    p->y = clamp(p->y - dy, 0, (int)screen.height - 1); /* PS/2's y grows upwards */
    if ((buttons & 1) && !(p->buttons & 1))
        p->clicked = 1;
    p->buttons = buttons;
    p->moved = 1;
}

int ps2_poll(char *keys, int cap, struct pointer_state *p)
{
    int n = 0;
    for (int i = 0; i < 256; i++) {
        uint8_t st = inb(I8042_STATUS);
        if (!(st & ST_OUT_FULL))
            break;
        uint8_t b = inb(I8042_DATA);
        if (st & ST_AUX) {
            mouse_byte(b, p);
            continue;
        }
        int c = key(b);
        if (c && n < cap)
            keys[n++] = (char)c;
    }
    return n;
}
