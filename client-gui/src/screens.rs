//! The forms: sign-in, a new password, the untrusted-certificate question, the desktop list. Every input is tied
//! to its label, which is also its accessible name (what screen readers and the UI tests use).

use egui::{RichText, TextEdit};

use crate::app::App;
use crate::broker::MyDesktop;
use crate::desktops::{describe, DesktopAction};

impl App {
    pub(crate) fn sign_in_ui(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        ui.heading("Sign in to Tessera");
        ui.add_space(8.0);
        let mut submit = false;
        egui::Grid::new("sign-in").num_columns(2).show(ui, |ui| {
            let l = ui.label("Broker");
            let r = ui
                .add(
                    TextEdit::singleline(&mut self.broker_address)
                        .hint_text("vdi.example.com")
                        .desired_width(280.0),
                )
                .labelled_by(l.id);
            if !r.has_focus() {
                self.refresh_domains(&ctx);
            }
            ui.end_row();
            let l = ui.label("User name");
            ui.add(
                TextEdit::singleline(&mut self.user)
                    .hint_text("DOMAIN\\user or user@domain")
                    .desired_width(280.0),
            )
            .labelled_by(l.id);
            ui.end_row();
            let l = ui.label("Password");
            // With the broker and the name remembered, the password is all there is to type.
            // Asked for until it has held through a pass: the grid's first (sizing) pass drops
            // the focus of its fields.
            let password = ui.make_persistent_id("password");
            if self.focus_password {
                self.focus_password = !ui.memory(|m| m.has_focus(password));
                ui.memory_mut(|m| m.request_focus(password));
            }
            let r = ui
                .add(
                    TextEdit::singleline(&mut self.password)
                        .id(password)
                        .password(true)
                        .desired_width(280.0),
                )
                .labelled_by(l.id);
            submit |= r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            ui.end_row();
            if self.domains.len() > 1 {
                let l = ui.label("Domain");
                egui::ComboBox::from_id_salt("domain")
                    .selected_text(self.domain.as_str())
                    .width(280.0)
                    .show_ui(ui, |ui| {
                        for d in &self.domains {
                            ui.selectable_value(&mut self.domain, d.clone(), d.as_str());
                        }
                    })
                    .response
                    .labelled_by(l.id);
                ui.end_row();
            }
        });
        ui.add_space(8.0);
        submit |= ui.button("Sign in").clicked();
        if let Some(e) = &self.error {
            ui.add_space(8.0);
            ui.label(RichText::new(e).color(ui.visuals().error_fg_color));
        }
        if submit {
            self.sign_in(&ctx, None);
        }
    }

    pub(crate) fn change_password_ui(&mut self, ui: &mut egui::Ui, why: &str) {
        let ctx = ui.ctx().clone();
        ui.heading("Change your password");
        ui.label(format!("{why} ({})", self.login_name()));
        ui.add_space(8.0);
        let mut submit = false;
        egui::Grid::new("change-password")
            .num_columns(2)
            .show(ui, |ui| {
                for (label, field) in [
                    ("Current password", &mut self.password),
                    ("New password", &mut self.new_password),
                    ("Confirm new password", &mut self.confirm_password),
                ] {
                    let l = ui.label(label);
                    let r = ui
                        .add(
                            TextEdit::singleline(field)
                                .password(true)
                                .desired_width(240.0),
                        )
                        .labelled_by(l.id);
                    submit |= r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
                    ui.end_row();
                }
            });
        ui.add_space(8.0);
        let mut cancel = false;
        ui.horizontal(|ui| {
            submit |= ui.button("Change password").clicked();
            cancel = ui.button("Cancel").clicked();
        });
        if let Some(e) = &self.error {
            ui.add_space(8.0);
            ui.label(RichText::new(e).color(ui.visuals().error_fg_color));
        }
        if cancel {
            self.sign_out();
        } else if submit {
            self.change_password(&ctx, why);
        }
    }

    pub(crate) fn untrusted_ui(&mut self, ui: &mut egui::Ui, fingerprint: &str) {
        let ctx = ui.ctx().clone();
        ui.heading("Unknown certificate");
        ui.label(format!(
            "The broker at {} presented a certificate this computer does not trust.",
            self.broker_address.trim()
        ));
        ui.label("Continue only if your administrator confirms this fingerprint:");
        ui.label(RichText::new(fingerprint).monospace());
        ui.horizontal(|ui| {
            if ui.button("Trust this certificate").clicked() {
                self.accept_certificate(&ctx, fingerprint);
            }
            if ui.button("Cancel").clicked() {
                self.fail("the broker's certificate was not accepted".into());
            }
        });
    }

    pub(crate) fn pools_ui(&mut self, ui: &mut egui::Ui, desktops: &[MyDesktop]) {
        let ctx = ui.ctx().clone();
        ui.heading(format!("Desktops for {}", self.user.trim()));
        ui.add_space(4.0);
        let mut chosen = None;
        let mut act = None;
        egui::Grid::new("desktops")
            .num_columns(3)
            .spacing([16.0, 8.0])
            .show(ui, |ui| {
                for d in desktops {
                    let name = if d.display_name.is_empty() {
                        d.pool.clone()
                    } else {
                        format!("{} ({})", d.display_name, d.pool)
                    };
                    ui.vertical(|ui| {
                        ui.strong(name);
                        ui.label(describe(d));
                    });
                    if ui.button(format!("Connect to {}", d.pool)).clicked() {
                        chosen = Some(d.pool.clone());
                    }
                    ui.horizontal(|ui| {
                        if d.desktop.is_some() {
                            if ui.button(format!("Restart {}", d.pool)).clicked() {
                                act = Some((d.pool.clone(), DesktopAction::Restart));
                            }
                            if ui.button(format!("Log off {}", d.pool)).clicked() {
                                act = Some((d.pool.clone(), DesktopAction::LogOff));
                            }
                        }
                    });
                    ui.end_row();
                }
            });
        ui.add_space(8.0);
        if ui.button("Sign out").clicked() {
            self.sign_out();
        }
        if let Some(e) = &self.error {
            ui.add_space(8.0);
            ui.label(RichText::new(e).color(ui.visuals().error_fg_color));
        }
        if let Some(p) = chosen {
            self.sign_in(&ctx, Some(p));
        } else if let Some((p, a)) = act {
            self.desktop_action(&ctx, &p, a);
        }
    }
}
