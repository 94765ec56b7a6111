/* What spice-server-sys binds: libspice-server's public API (spice.h is the only header that
 * may be included directly) and the protocol definitions its QXL and agent interfaces use. */
#include <spice.h>
#include <spice/enums.h>
#include <spice/qxl_dev.h>
#include <spice/vd_agent.h>
