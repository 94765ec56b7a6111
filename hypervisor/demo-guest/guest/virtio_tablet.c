/* The virtio-input tablet (virtio 1.0 over PCI, the device tessera-vmm attaches with every
 * display): one event queue of 8-byte input events, polled; no interrupts are configured. */
#include "hw.h"
#include "draw.h"
#include "input.h"

#define VIRTIO_VENDOR 0x1af4
#define VIRTIO_INPUT 0x1052
#define CAP_VENDOR 0x09
#define CFG_COMMON 1
#define CFG_NOTIFY 2
/* Common configuration registers. */
#define DRIVER_FEATURE_SELECT 0x08
#define DRIVER_FEATURE 0x0c
#define DEVICE_STATUS 0x14
#define QUEUE_SELECT 0x16
#define QUEUE_SIZE 0x18
#define QUEUE_MSIX_VECTOR 0x1a
#define QUEUE_ENABLE 0x1c
#define QUEUE_NOTIFY_OFF 0x1e
#define QUEUE_DESC 0x20
#define QUEUE_DRIVER 0x28
#define QUEUE_DEVICE 0x30
#define S_ACKNOWLEDGE 1
#define S_DRIVER 2
#define S_DRIVER_OK 4
#define S_FEATURES_OK 8
#define F_VERSION_1_HIGH 1 /* feature bit 32 */
#define NO_VECTOR 0xffff
#define DESC_WRITE 2

#define EV_SYN 0
#define EV_KEY 1
#define EV_ABS 3
#define ABS_X 0
#define ABS_Y 1
#define BTN_LEFT 0x110
#define ABS_RANGE 32768u

#define QMAX 64

struct desc { uint64_t addr; uint32_t len; uint16_t flags, next; };
struct avail { uint16_t flags, idx, ring[QMAX], used_event; };
struct used_elem { uint32_t id, len; };
struct used { uint16_t flags, idx; struct used_elem ring[QMAX]; uint16_t avail_event; };
struct input_event { uint16_t type, code; uint32_t value; };

static struct desc descs[QMAX] __attribute__((aligned(16)));
static struct avail avail __attribute__((aligned(16)));
static struct used used __attribute__((aligned(16)));
static struct input_event events[QMAX];
static unsigned qsize;
static uint16_t last_used;
static uint64_t notify;
/* The event being assembled until EV_SYN. */
static int next_x = -1, next_y = -1;
static unsigned next_buttons;

/* Finds the common and notify structures; 0 when the capabilities are not there. */
static int find_caps(unsigned dev, uint64_t *common, uint64_t *notify_base, uint32_t *mult)
{
    if (!((pci_read32(dev, 0x04) >> 16) & 0x10))
        return 0;
    unsigned cap = pci_read8(dev, 0x34) & 0xfc;
    for (int guard = 0; cap && guard < 48; guard++) {
        if (pci_read8(dev, cap) == CAP_VENDOR) {
            uint8_t type = pci_read8(dev, cap + 3);
            uint64_t at = pci_bar(dev, pci_read8(dev, cap + 4)) + pci_read32(dev, cap + 8);
            if (type == CFG_COMMON)
                *common = at;
            if (type == CFG_NOTIFY) {
                *notify_base = at;
                *mult = pci_read32(dev, cap + 16);
            }
        }
        cap = pci_read8(dev, cap + 1) & 0xfc;
    }
    return *common && *notify_base;
}

int tablet_init(void)
{
    int dev = pci_find(VIRTIO_VENDOR, VIRTIO_INPUT);
    uint64_t common = 0, notify_base = 0;
    uint32_t mult = 0;
    if (dev < 0)
        return 0;
    pci_enable((unsigned)dev);
    if (!find_caps((unsigned)dev, &common, &notify_base, &mult))
        return 0;
    mmio_write8(common + DEVICE_STATUS, 0);
    mmio_write8(common + DEVICE_STATUS, S_ACKNOWLEDGE | S_DRIVER);
    mmio_write32(common + DRIVER_FEATURE_SELECT, 1);
    mmio_write32(common + DRIVER_FEATURE, F_VERSION_1_HIGH);
    mmio_write32(common + DRIVER_FEATURE_SELECT, 0);
    mmio_write32(common + DRIVER_FEATURE, 0);
    mmio_write8(common + DEVICE_STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK);
    if (!(mmio_read8(common + DEVICE_STATUS) & S_FEATURES_OK))
        return 0;
    mmio_write16(common + QUEUE_SELECT, 0);
    unsigned max = mmio_read16(common + QUEUE_SIZE);
    if (max == 0)
        return 0;
    qsize = max < QMAX ? max : QMAX;
    mmio_write16(common + QUEUE_SIZE, (uint16_t)qsize);
    mmio_write16(common + QUEUE_MSIX_VECTOR, NO_VECTOR);
    mmio_write64(common + QUEUE_DESC, (uint64_t)descs);
    mmio_write64(common + QUEUE_DRIVER, (uint64_t)&avail);
    mmio_write64(common + QUEUE_DEVICE, (uint64_t)&used);
    notify = notify_base + (uint64_t)mmio_read16(common + QUEUE_NOTIFY_OFF) * mult;
    for (unsigned i = 0; i < qsize; i++) {
        descs[i].addr = (uint64_t)&events[i];
        descs[i].len = sizeof events[i];
        descs[i].flags = DESC_WRITE;
        avail.ring[i] = (uint16_t)i;
    }
    barrier();
    avail.idx = (uint16_t)qsize;
    mmio_write16(common + QUEUE_ENABLE, 1);
    mmio_write8(common + DEVICE_STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
    mmio_write16(notify, 0);
    return 1;
}

static void event(const struct input_event *e, struct pointer_state *p)
{
    if (e->type == EV_ABS && e->code == ABS_X && e->value < ABS_RANGE)
        next_x = (int)(e->value * screen.width / ABS_RANGE);
    else if (e->type == EV_ABS && e->code == ABS_Y && e->value < ABS_RANGE)
        next_y = (int)(e->value * screen.height / ABS_RANGE);
    else if (e->type == EV_KEY && e->code >= BTN_LEFT && e->code < BTN_LEFT + 3) {
        unsigned bit = 1u << (e->code - BTN_LEFT);
        next_buttons = e->value ? next_buttons | bit : next_buttons & ~bit;
    } else if (e->type == EV_SYN) {
        if (next_x >= 0 && next_x != p->x) {
            p->x = next_x;
            p->moved = 1;
        }
        if (next_y >= 0 && next_y != p->y) {
            p->y = next_y;
            p->moved = 1;
        }
        if ((next_buttons & 1) && !(p->buttons & 1))
            p->clicked = 1;
        p->buttons = next_buttons;
    }
}

void tablet_poll(struct pointer_state *p)
{
    volatile uint16_t *used_idx = &used.idx;
    volatile uint16_t *avail_idx = &avail.idx;
    int returned = 0;
    while (qsize && last_used != *used_idx) {
        barrier();
        uint32_t id = used.ring[last_used % qsize].id;
        last_used++;
        if (id >= qsize) /* a device bug; never index with it */
            continue;
        event(&events[id], p);
        avail.ring[*avail_idx % qsize] = (uint16_t)id;
        barrier();
        *avail_idx = (uint16_t)(*avail_idx + 1);
        returned = 1;
    }
    if (returned)
        mmio_write16(notify, 0);
}
