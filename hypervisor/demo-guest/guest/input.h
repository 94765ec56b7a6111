/* The pointer and keyboard as the demo sees them, whichever device they come from. */
#ifndef DEMO_INPUT_H
#define DEMO_INPUT_H

struct pointer_state {
    int x, y;          /* screen pixels */
    unsigned buttons;  /* bit 0 left, 1 right, 2 middle */
    int moved;         /* set by the devices, cleared by the main loop */
    int clicked;       /* a left press happened */
};

/* i8042: keyboard with scancode translation (set 1) and the PS/2 mouse on the aux port. */
void ps2_init(void);
/* Drains the controller: typed characters into `keys` (at most `cap`; returns how many),
 * mouse packets into `p` (relative motion, clamped to the screen). */
int ps2_poll(char *keys, int cap, struct pointer_state *p);
/* What ps2_poll gives for Ctrl+Alt+Delete (not a character). */
#define KEY_CTRL_ALT_DEL 0x7f

/* The virtio-input tablet (absolute pointer); returns 0 when there is none. */
int tablet_init(void);
/* Takes the tablet's events into `p`. */
void tablet_poll(struct pointer_state *p);

#endif
